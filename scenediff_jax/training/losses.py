"""The scene diffusion losses (PAPER.md "Losses"): L = L_pose + L_shape + λ·L_align.

L_pose and L_shape are the MSEs of the network's output against its target (ε, x₀ or v:
diffusion/parametrization.py), each scene's weighted by a function of its timestep
(diffusion/weighting.py), masked so padding never counts and L_shape only counts objects
with shape ground truth. L_align takes the one-step x̂₀ of pose and shape,
samples points from the x̂₀ Gaussians, places them in the world frame with the un-normalised
x̂₀ pose, and averages the squared distance from each visible object's ground-truth depth
points to its nearest predicted point (one-sided Chamfer, depth → prediction).
"""
import jax
import jax.numpy as jnp

from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import gmm, nearest_sq_dist
from scenediff_jax.geometry import pose as pose_lib


def _expand(a, like):
  return a.reshape(a.shape + (1,) * (like.ndim - a.ndim)).astype(like.dtype)


def masked_mean(values, mask):
  """Mean of values [..., *rest] over the entries whose leading dims are True in mask [...]."""
  mask = _expand(mask, values)
  count = jnp.sum(jnp.broadcast_to(mask, values.shape))
  return jnp.sum(values * mask) / jnp.maximum(count, 1.0)


def denoising_losses(output, target, batch, weights=None):
  """(L_pose, L_shape): MSE of the network's output against its target (ε, x₀ or v; x₀ for
  the regression ablation), each scene's squared errors times its `weights` [B] (1 if None);
  the layout counts in L_pose where the scene has one (`layout_mask`; Pix3D has none)."""
  sq = jax.tree.map(lambda a, b: jnp.square(a - b), output, target)
  if weights is not None:
    sq = jax.tree.map(lambda x: x * _expand(weights, x), sq)
  layout_mask = batch['layout_mask'].astype(sq['layout'].dtype)
  pose_sum = jnp.sum(sq['pose'] * batch['mask'][..., None]) + jnp.sum(
      sq['layout'] * layout_mask[:, None])
  pose_count = 7 * (jnp.sum(batch['mask']) + jnp.sum(layout_mask))
  has_shape = batch['mask'] & batch['has_shape']
  shape = masked_mean(sq['gaussians'], has_shape) + masked_mean(sq['intrinsics'], has_shape)
  return pose_sum / pose_count, shape


def predicted_surface_points(key, x0, batch, statistics, image_size, points_per_gaussian):
  """World points [B, N, g·m, 3] sampled from the un-normalised x̂₀ shapes placed by x̂₀ poses."""
  poses = statistics.pose.denormalize(x0['pose'])
  boxes = pose_lib.pose_to_box(poses, batch['bbox2d'], batch['K'][:, None],
                               batch['world_to_cam'][:, None], image_size)
  gaussians = statistics.gaussians.denormalize(x0['gaussians'])
  canonical = gmm.sample(key, gaussians, points_per_gaussian)  # [B, N, g, m, 3]
  canonical = canonical.reshape(*canonical.shape[:2], -1, 3)
  return boxes_lib.canonical_to_world(canonical, boxes)


def alignment_loss(key, x0, batch, statistics, image_size, points_per_gaussian, weights=None):
  """L_align of the x̂₀ estimate, averaged over objects with depth points; with `weights`
  [B] each scene's objects count times its weight (the average stays over objects)."""
  points = predicted_surface_points(key, x0, batch, statistics, image_size, points_per_gaussian)
  sq_dist = nearest_sq_dist(batch['depth_points'], points)  # [B, N, P]
  depth_mask = batch['depth_mask'] & batch['mask'][..., None]
  count = jnp.sum(depth_mask, -1)
  per_object = jnp.sum(sq_dist * depth_mask, -1) / jnp.maximum(count, 1)
  visible = count > 0
  if weights is not None:
    per_object = per_object * weights[:, None]
  return jnp.sum(per_object * visible) / jnp.maximum(jnp.sum(visible), 1)
