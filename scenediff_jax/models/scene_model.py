"""The image-conditioned scene diffusion network: image encoder + scene denoiser, one param tree.

The condition y (the layout's, then one per object) depends only on the image, the camera
and the detections, so samplers compute it once (`condition`) and call `denoise` at every
step.
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

  def condition(self, batch, drop=None):
    """y [B, 1 + N, C] from a batch with image, K, world_to_cam, bbox2d and class; scenes
    flagged in `drop` [B] get the learned null condition."""
    return self.encoder(batch['image'], batch['K'], batch['world_to_cam'], batch['bbox2d'],
                        batch['class'], drop)

  def null_condition(self, batch_size, num_objects):
    return self.encoder.null(batch_size, num_objects)

  def denoise(self, noisy, t, condition, mask):
    """ε̂ of every scene element: dict(layout, pose, gaussians, intrinsics)."""
    return self.scene_denoiser(noisy, t, condition, mask)

  def __call__(self, batch, noisy, t):
    # Used only by init, so that one call creates every parameter.
    return self.denoise(noisy, t, self.condition(batch), batch['mask'])


def make_model(config) -> SceneModel:
  return SceneModel(image_encoder=config.image_encoder.to_dict(),
                    denoiser=config.denoiser.to_dict())
