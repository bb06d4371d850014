"""cnnbench: image classifiers from Keras training to production speed."""

__version__ = "0.1.0"
