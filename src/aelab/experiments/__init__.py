"""Experiments: training jobs, hyperparameter tuning and the study that compares architectures."""
