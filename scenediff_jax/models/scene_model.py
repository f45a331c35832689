"""The image-conditioned scene diffusion network: image encoder + scene denoiser, one param tree.

The condition y (per object) depends only on the image and the detections, so samplers
compute it once (`condition`) and call `denoise` at every step.
"""
import flax.linen as nn

from scenediff_jax.models.image_encoder import ImageEncoder
from scenediff_jax.models.scene_denoiser import SceneDenoiser


class SceneModel(nn.Module):
  image_encoder: dict
  denoiser: dict

  def setup(self):
    self.encoder = ImageEncoder(**self.image_encoder)
    self.scene_denoiser = SceneDenoiser(**self.denoiser)

  def condition(self, image, bbox2d, classes, drop=None):
    """y [B, N, C]; scenes flagged in `drop` [B] get the learned null condition."""
    return self.encoder(image, bbox2d, classes, drop)

  def null_condition(self, batch_size, num_objects):
    return self.encoder.null(batch_size, num_objects)

  def denoise(self, noisy, t, condition, mask):
    """ε̂ of every scene element: dict(layout, pose, gaussians, intrinsics)."""
    return self.scene_denoiser(noisy, t, condition, mask)

  def __call__(self, image, bbox2d, classes, noisy, t, mask):
    # Used only by init, so that one call creates every parameter.
    return self.denoise(noisy, t, self.condition(image, bbox2d, classes), mask)


def make_model(config) -> SceneModel:
  return SceneModel(image_encoder=config.image_encoder.to_dict(),
                    denoiser=config.denoiser.to_dict())
