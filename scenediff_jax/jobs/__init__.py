"""The jobs `main` dispatches that run a trained model: evaluation of the scene model and of
the shape autoencoder, the ablation (which trains and evaluates), and diagnostics.

They stand above both training/ and inference/: they train through the one and sample through
the other, so neither of those two imports them (or, for training, each other's jobs).
"""
