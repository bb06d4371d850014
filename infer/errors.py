from cnnbench.errors import CnnbenchError, first_line

__all__ = ["InferError", "first_line"]


class InferError(CnnbenchError):
    """A problem with a model, an input or an option of `infer`, meant for the user."""
