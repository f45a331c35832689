"""Exact 3D IoU of gravity-aligned oriented boxes (7-number layout), batched in numpy.

Intersection volume = (area of the intersection of the two floor-plan rectangles) × (overlap
of the vertical extents). The intersection of two convex polygons is the convex polygon whose
vertices are: the corners of each rectangle that lie inside the other, and the crossing
points of their edges. We gather those candidates for all pairs at once, order the valid
ones by angle around their centroid, and take the shoelace area.
"""
import numpy as np

from scenediff_jax.geometry import boxes as box_lib

_EPS = 1e-9


def footprints(boxes):
  """Floor-plan rectangles [N, 4, 2] (x, z), counter-clockwise in (x, z)."""
  corners = box_lib.box_corners(np.asarray(boxes, np.float64))[:, :4][:, :, [0, 2]]
  area = _shoelace(corners)
  return np.where((area < 0)[:, None, None], corners[:, ::-1], corners)


def _shoelace(poly):
  x, y = poly[..., 0], poly[..., 1]
  return 0.5 * np.sum(x * np.roll(y, -1, -1) - np.roll(x, -1, -1) * y, -1)


def _inside(points, poly):
  """Boolean [N, P]: points [N, P, 2] inside (or on) counter-clockwise polygons [N, 4, 2]."""
  a, b = poly, np.roll(poly, -1, 1)
  edge = (b - a)[:, None]                     # [N, 1, 4, 2]
  rel = points[:, :, None] - a[:, None]       # [N, P, 4, 2]
  cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]
  scale = np.linalg.norm(edge, axis=-1)
  return np.all(cross >= -_EPS * np.maximum(scale, 1.0), -1)


def _edge_crossings(pa, pb):
  """Crossing points [N, 16, 2] of the edges of pa and pb, with validity [N, 16]."""
  a0, a1 = pa, np.roll(pa, -1, 1)
  b0, b1 = pb, np.roll(pb, -1, 1)
  r = (a1 - a0)[:, :, None]                   # [N, 4, 1, 2]
  s = (b1 - b0)[:, None]                      # [N, 1, 4, 2]
  qp = b0[:, None] - a0[:, :, None]           # [N, 4, 4, 2]
  denom = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]
  ok = np.abs(denom) > _EPS
  safe = np.where(ok, denom, 1.0)
  t = (qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]) / safe
  u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
  valid = ok & (t >= -_EPS) & (t <= 1 + _EPS) & (u >= -_EPS) & (u <= 1 + _EPS)
  points = a0[:, :, None] + t[..., None] * r
  n = len(pa)
  return points.reshape(n, 16, 2), valid.reshape(n, 16)


def footprint_intersection_area(pa, pb):
  """Area [N] of the intersection of convex quadrilaterals pa, pb [N, 4, 2] (CCW)."""
  crossings, crossing_ok = _edge_crossings(pa, pb)
  candidates = np.concatenate([pa, pb, crossings], 1)                     # [N, 24, 2]
  valid = np.concatenate([_inside(pa, pb), _inside(pb, pa), crossing_ok], 1)
  count = valid.sum(1)
  center = np.sum(candidates * valid[..., None], 1) / np.maximum(count, 1)[:, None]
  angle = np.arctan2(candidates[..., 1] - center[:, None, 1],
                     candidates[..., 0] - center[:, None, 0])
  angle = np.where(valid, angle, np.inf)       # invalid candidates sort last ...
  order = np.argsort(angle, 1)
  hull = np.take_along_axis(candidates, order[..., None], 1)
  valid_sorted = np.take_along_axis(valid, order, 1)
  # ... and are replaced by the first valid vertex, adding zero area.
  hull = np.where(valid_sorted[..., None], hull, hull[:, :1])
  return np.where(count >= 3, np.abs(_shoelace(hull)), 0.0)


def box_iou_3d(a, b):
  """IoU [N] of the aligned pairs of boxes a, b [N, 7] ([cx, cy, cz, w, h, d, yaw])."""
  a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
  if a.shape != b.shape or a.shape[-1] != 7:
    raise ValueError(f'box_iou_3d needs two [N, 7] arrays of equal shape, got {a.shape}, '
                     f'{b.shape}.')
  if len(a) == 0:
    return np.zeros(0)
  area = footprint_intersection_area(footprints(a), footprints(b))
  top = np.maximum(a[:, 1] - a[:, 4] / 2, b[:, 1] - b[:, 4] / 2)
  bottom = np.minimum(a[:, 1] + a[:, 4] / 2, b[:, 1] + b[:, 4] / 2)
  intersection = area * np.maximum(bottom - top, 0.0)
  union = np.prod(a[:, 3:6], 1) + np.prod(b[:, 3:6], 1) - intersection
  return intersection / np.maximum(union, 1e-12)


def pairwise_box_iou_3d(a, b):
  """IoU [N, M] of every box in a [N, 7] with every box in b [M, 7]."""
  a, b = np.asarray(a, np.float64).reshape(-1, 7), np.asarray(b, np.float64).reshape(-1, 7)
  n, m = len(a), len(b)
  return box_iou_3d(np.repeat(a, m, 0), np.tile(b, (n, 1))).reshape(n, m)
