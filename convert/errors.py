class ConvertError(Exception):
    """A problem with a model to convert or a conversion option, meant for the user."""
