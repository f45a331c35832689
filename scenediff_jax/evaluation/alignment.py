"""L_align as a metric: how far the observed depth lies from the reconstructed surface.

For every visible object, the ground-truth depth pixels inside its instance mask are
back-projected to 3D; L_align is the mean squared distance from those points to the nearest
point of the object's reconstructed surface (one-sided: depth → reconstruction), averaged
over the objects that have depth points. Metres², like the paper's numbers.
"""
import numpy as np

from scenediff_jax.geometry import nearest_sq_dist


def _bucket(n):
  """Padded size for n points: powers of two, so a split's thousands of objects (each with
  its own point counts) compile the kernel a handful of times instead of once each."""
  return max(64, 1 << (int(n) - 1).bit_length())


def _pad(points, size):
  return np.concatenate([points, np.repeat(points[:1], size - len(points), 0)])


def object_alignment(depth_points, surface_points):
  """Mean squared distance from depth points [K, 3] to surface points [P, 3]."""
  depth_points = np.asarray(depth_points, np.float32)
  surface_points = np.asarray(surface_points, np.float32)
  if len(depth_points) == 0:
    return float('nan')
  # Repeated queries are sliced off; repeated surface points change no nearest distance.
  d2 = nearest_sq_dist(_pad(depth_points, _bucket(len(depth_points))),
                       _pad(surface_points, _bucket(len(surface_points))))
  return float(np.mean(np.asarray(d2)[:len(depth_points)]))


def scene_alignment(depth_points_per_object, surface_points_per_object):
  """Per-object values [n] (NaN for objects with no depth points)."""
  return np.array([object_alignment(d, s)
                   for d, s in zip(depth_points_per_object, surface_points_per_object)])
