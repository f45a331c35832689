"""Samples scenes from the trained diffusion model: DDIM from noise, conditioned on an image and
its detections (or on the null condition), then un-normalised into boxes and shape codes."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax import diffusion
from scenediff_jax.geometry import boxes as boxes_lib, gmm, pose as pose_lib
from scenediff_jax.models.scene_model import SceneModel


def latent_template(batch_size, num_objects, num_parts, intrinsic_size):
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  return {'layout': s(batch_size, 7), 'pose': s(batch_size, num_objects, 7),
          'gaussians': s(batch_size, num_objects, num_parts, gmm.GAUSSIAN_SIZE),
          'intrinsics': s(batch_size, num_objects, num_parts, intrinsic_size)}


def make_sampler(model: SceneModel, schedule, config, *, unconditional=False):
  """A jitted sampler(params, batch, key) → normalised x₀ dict for a padded batch with
  image, K, world_to_cam, bbox2d, class and mask (DDIM with the config's steps, eta and guidance scale)."""
  d, s = config.diffusion, config.shape_model

  @jax.jit
  def sample(params, batch, key):
    batch_size, num_objects = batch['class'].shape
    null = model.apply(params, batch_size, num_objects, method=SceneModel.null_condition)
    y = null if unconditional else model.apply(params, batch, method=SceneModel.condition)
    denoise = lambda condition, x, t: model.apply(params, x, t, condition, batch['mask'],
                                                  method=SceneModel.denoise)
    denoise_fn = diffusion.guided_denoise_fn(functools.partial(denoise, y),
                                             functools.partial(denoise, null), d.guidance_scale)
    template = latent_template(batch_size, num_objects, s.num_parts, s.intrinsic_size)
    return diffusion.ddim_sample(denoise_fn, schedule, key, template,
                                 num_steps=d.sampling_steps, eta=d.eta,
                                 clip_x0=d.clip_x0 or None)

  return sample


def decode(x0, batch, statistics):
  """Normalised samples → numpy world boxes [B, N, 7], layouts [B, 7], valid Gaussians
  [B, N, g, 16] and intrinsics [B, N, g, d] (canonical frame of each box)."""
  x0 = jax.device_get(x0)
  poses = statistics.pose.denormalize(np.asarray(x0['pose'], np.float64))
  height, width = batch['image'].shape[1:3]
  boxes = pose_lib.pose_to_box(poses, np.asarray(batch['bbox2d'], np.float64),
                               np.asarray(batch['K'], np.float64)[:, None],
                               np.asarray(batch['world_to_cam'], np.float64)[:, None],
                               np.array([width, height], np.float64))
  # Sizes must be positive for a box; the sampler may overshoot on rare objects.
  layout = statistics.layout.denormalize(np.asarray(x0['layout'], np.float64))
  for b in (boxes, layout):
    b[..., 3:6] = np.maximum(b[..., 3:6], 1e-2)
    b[..., 6] = boxes_lib.wrap_angle(b[..., 6])
  gaussians = np.asarray(gmm.project(statistics.gaussians.denormalize(
      jnp.asarray(x0['gaussians']))))
  intrinsics = statistics.intrinsics.denormalize(np.asarray(x0['intrinsics'], np.float32))
  return {'boxes': boxes, 'layout': layout, 'gaussians': gaussians, 'intrinsics': intrinsics}
