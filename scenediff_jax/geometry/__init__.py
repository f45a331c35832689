"""Geometry shared by every part of scenediff_jax: frames, cameras, boxes, poses, statistics.

numpy and jax.numpy alike (each function follows the type of its inputs); imports nothing
else of ours. The JAX-only nearest-neighbour kernel is imported on first use, so numpy users
(the data pipelines and their worker processes) never start jax.
"""
from scenediff_jax.geometry.boxes import (
  box_corners,
  box_from_corners,
  canonical_to_world,
  points_in_box,
  rotation_y,
  transform_boxes,
  world_to_canonical,
  wrap_angle,
)
from scenediff_jax.geometry.camera import (
  back_project,
  depth_to_points,
  intrinsics,
  pitch_roll,
  pixel_rays,
  points_to_depth,
  project,
  scale_intrinsics,
  world_to_cam,
)
from scenediff_jax.geometry.classes import AP_CLASSES, CLASSES
from scenediff_jax.geometry.normalization import Statistics, compute_statistics
from scenediff_jax.geometry.pose import POSE_FIELDS, box_to_pose, pose_to_box


def __getattr__(name):
  if name in ('nearest_sq_dist', 'nearest_index'):
    from scenediff_jax.geometry import nearest
    return getattr(nearest, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
