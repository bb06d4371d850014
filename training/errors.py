from cnnbench.errors import CnnbenchError, first_line

__all__ = ["TrainError", "first_line"]


class TrainError(CnnbenchError):
    """A problem with an architecture, a dataset or a training option, meant for the user."""
