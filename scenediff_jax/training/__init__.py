"""Training: the main job's stages (pipeline.py), input pipelines, train steps, losses,
sharding and checkpoints. Imports nothing of inference/ or jobs/, which stand above it."""
