"""cnnbench.training: the architectures of the seed notes, datasets, training runs."""
