"""Training: input pipelines, train steps, losses, sharding and checkpoints."""
