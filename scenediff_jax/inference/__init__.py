"""Inference-time utilities: turning trained decoders into meshes."""
