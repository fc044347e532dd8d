"""Producing checkpoints: training data, losses, mashups, key analysis, training, Keras import."""
