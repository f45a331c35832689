"""Flax Linen modules: the shape autoencoder (and, later, the image encoder and denoiser)."""
