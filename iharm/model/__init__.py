"""Networks, building blocks, losses, initialisers and the model registry."""
