"""Flax Linen modules: the image encoder, the scene denoiser and the shape autoencoder, each
with its constructor from a config and its abstract parameters (shapes without values)."""
