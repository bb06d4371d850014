"""Pixels to scores: the model contract, preprocessing, sessions, runners, score modes."""
