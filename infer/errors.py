class InferError(Exception):
    """A problem with a model, an input or an option of `infer`, meant for the user."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty,
    so that a one-line error never turns into an IndexError traceback."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
