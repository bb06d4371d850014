class TrainError(Exception):
    """A problem with an architecture, a dataset or a training option, meant for the user."""


# The twin of cnnbench.infer.errors.first_line: training and infer never import each other.
def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type when the message is empty,
    so that a one-line error never turns into an IndexError traceback."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
