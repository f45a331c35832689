"""Samples scenes from the trained diffusion model: DDIM from noise, conditioned on an image and
its detections (or on the null condition), then un-normalised into boxes and shape codes."""
import functools

import jax
import jax.numpy as jnp

from scenediff_jax import diffusion
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import gmm
from scenediff_jax.geometry import pose as pose_lib
from scenediff_jax.models.scene_model import SceneModel

MIN_DISTANCE = 0.1  # metres from the camera centre: the nearest a sampled object may be


def latent_template(batch_size, num_objects, num_parts, intrinsic_size):
  s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  return {'layout': s(batch_size, 7), 'pose': s(batch_size, num_objects, 7),
          'gaussians': s(batch_size, num_objects, num_parts, gmm.GAUSSIAN_SIZE),
          'intrinsics': s(batch_size, num_objects, num_parts, intrinsic_size)}


def scene_sampler(model: SceneModel, schedule, config, *, unconditional=False):
  """sample(params, batch, key, timesteps, guidance_scale) → normalised x₀ dict.

  A pure function of arrays (jit-able and exportable): DDIM over the descending `timesteps`
  with the config's eta, x̂₀ clip and prediction (ε, x₀ or v); for the regression ablation
  (config.method), one forward pass, whatever the key and timesteps. `batch` has mask [B, N]
  and, unless unconditional, image, K, world_to_cam, bbox2d and class. A python
  guidance_scale of 1 compiles the conditional branch only; a traced one decides at run time.
  """
  d, s = config.diffusion, config.shape_model
  regression = diffusion.is_regression(config)
  prediction = diffusion.prediction_of(config)

  def sample(params, batch, key, timesteps, guidance_scale):
    batch_size, num_objects = batch['mask'].shape
    null = model.apply(params, batch_size, num_objects, method=SceneModel.null_condition)
    denoise = lambda condition, x, t: model.apply(params, x, t, condition, batch['mask'],
                                                  method=SceneModel.denoise)
    if unconditional:
      denoise_fn = functools.partial(denoise, null)
    else:
      y = model.apply(params, batch, method=SceneModel.condition)
      denoise_fn = diffusion.guided_denoise_fn(functools.partial(denoise, y),
                                               functools.partial(denoise, null), guidance_scale)
    template = latent_template(batch_size, num_objects, s.num_parts, s.intrinsic_size)
    if regression:  # one forward pass predicts x₀ (clipped like DDIM's x̂₀)
      x0 = denoise_fn(*diffusion.regression_input(template, schedule.num_timesteps))
      return jax.tree.map(lambda x: jnp.clip(x, -d.clip_x0, d.clip_x0), x0) if d.clip_x0 else x0
    return diffusion.ddim_sample_over(denoise_fn, schedule, key, template, timesteps,
                                      eta=d.eta, clip_x0=d.clip_x0 or None,
                                      prediction=prediction)

  return sample


def decode(x0, batch, statistics):
  """Normalised samples → world boxes [B, N, 7], layouts [B, 7], valid Gaussians
  [B, N, g, 16] and intrinsics [B, N, g, d] (canonical frame of each box), in jax.numpy
  (the sampling functions decode before they return, inside jit).
  """
  height, width = batch['image'].shape[1:3]
  poses = statistics.pose.denormalize(x0['pose'])
  # A centre at distance ≤ 0 along its ray would sit behind the camera, where no pixel sees it.
  poses = jnp.concatenate([poses[..., :2], jnp.maximum(poses[..., 2:3], MIN_DISTANCE),
                           poses[..., 3:]], -1)
  boxes = pose_lib.pose_to_box(poses, batch['bbox2d'], batch['K'][:, None],
                               batch['world_to_cam'][:, None],
                               jnp.asarray([width, height], poses.dtype))
  layout = statistics.layout.denormalize(x0['layout'])
  # Sizes must be positive for a box; the sampler may overshoot on rare objects.
  boxes, layout = (jnp.concatenate([b[..., :3], jnp.maximum(b[..., 3:6], 1e-2),
                                    boxes_lib.wrap_angle(b[..., 6:7])], -1)
                   for b in (boxes, layout))
  gaussians = gmm.project(statistics.gaussians.denormalize(x0['gaussians']))
  intrinsics = statistics.intrinsics.denormalize(x0['intrinsics'])
  return {'boxes': boxes, 'layout': layout, 'gaussians': gaussians, 'intrinsics': intrinsics}
