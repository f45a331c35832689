"""Inference: a trained model's parameters (restore.py) as an InferenceModel that samples and
meshes scenes (trained_model.py), whether from a workdir or an exported bundle; reading
photos, writing meshes and previews. Of training/ it uses only the checkpoint reader."""
