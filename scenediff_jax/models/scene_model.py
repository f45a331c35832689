"""The image-conditioned scene diffusion network: image encoder + scene denoiser, one param tree.

The condition y (the layout's, then one per object) depends only on the image, the camera
and the detections, so samplers compute it once (`condition`) and call `denoise` at every
step.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from scenediff_jax.geometry import gmm
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


def compute_dtype(config):
  """The dtype of the matrix products and convolutions: config.training.compute_dtype
  ('float32', the default and that of workdirs trained before it existed, or 'bfloat16').
  Parameters, optimizer state and losses stay float32 whatever it is."""
  name = config.training.get('compute_dtype', 'float32')
  if name not in ('float32', 'bfloat16'):
    raise ValueError(f"config.training.compute_dtype must be 'float32' or 'bfloat16', not "
                     f'{name!r}.')
  return jnp.dtype(name)


def make_model(config) -> SceneModel:
  dtype = compute_dtype(config)
  return SceneModel(image_encoder={**config.image_encoder.to_dict(), 'dtype': dtype},
                    denoiser={**config.denoiser.to_dict(), 'dtype': dtype})


def init_inputs(config, image_size, batch_size=1):
  """Shapes and dtypes of what `SceneModel.init` takes: (batch, noisy x, timesteps)."""
  n, g = config.max_objects, config.shape_model.num_parts
  s = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct((batch_size, *shape), dtype)
  batch = {'image': s((*image_size, 3), jnp.uint8), 'K': s((3, 3)), 'world_to_cam': s((3, 3)),
           'bbox2d': s((n, 4)), 'class': s((n,), jnp.int32), 'mask': s((n,), jnp.bool_)}
  noisy = {'layout': s((7,)), 'pose': s((n, 7)), 'gaussians': s((n, g, gmm.GAUSSIAN_SIZE)),
           'intrinsics': s((n, g, config.shape_model.intrinsic_size))}
  return batch, noisy, s((), jnp.int32)


def abstract_params(config, image_size):
  """Shapes and dtypes of the network's parameters for images of `image_size` (H, W);
  nothing is initialised and no pretrained backbone is read."""
  return jax.eval_shape(make_model(config).init, jax.random.key(0),
                        *init_inputs(config, image_size))
