"""Training: the loop, checkpoints and resume, callbacks, optimizers, process ranks."""
