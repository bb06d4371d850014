class BenchError(Exception):
    """A problem with a model or an option of `bench`, meant for the user."""
