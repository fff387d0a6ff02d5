"""The training loop shared by all training stage kinds, checkpoints and resume."""
