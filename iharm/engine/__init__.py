"""Training engine: trainer, distributed setup, checkpoints, optimisers."""
