class InferError(Exception):
    """A problem with a model, an input or an option of `infer`, meant for the user."""
