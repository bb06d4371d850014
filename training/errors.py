class TrainError(Exception):
    """A problem with an architecture, a dataset or a training option, meant for the user."""
