from cnnbench.errors import CnnbenchError


class ConvertError(CnnbenchError):
    """A problem with a model to convert or a conversion option, meant for the user."""
