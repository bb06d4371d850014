from cnnbench.errors import CnnbenchError


class BenchError(CnnbenchError):
    """A problem with a model or an option of `bench`, meant for the user."""
