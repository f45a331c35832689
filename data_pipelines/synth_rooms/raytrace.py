"""Exact ray casting and inside tests for the solid parts of parts.py, vectorised over rays.

Everything happens in an object's canonical frame: a world ray x = o + t·d maps to the
canonical ray x' = o' + t·d' with the same parameter t, so hits of different objects stay
comparable (with camera rays scaled to z = 1, t is the depth).
"""
import numpy as np

NO_HIT = np.inf


def nudge_zeros(d):
  """Ray directions with exact zeros nudged, so slab divisions never produce NaN."""
  return np.where(np.abs(d) < 1e-12, 1e-12, d)


def _max3(a):
  """Max over a last axis of size 3 (much faster than a numpy reduction over it)."""
  return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _min3(a):
  return np.minimum(np.minimum(a[..., 0], a[..., 1]), a[..., 2])


def _box_hits(o, d, lo, hi):
  """Rays [R, 3] × boxes [P, 3] slab test → entry t [R, P] (inf where missed)."""
  inv = 1.0 / nudge_zeros(d)[:, None, :]
  t1 = (lo[None] - o[:, None, :]) * inv
  t2 = (hi[None] - o[:, None, :]) * inv
  t_near, t_far = _max3(np.minimum(t1, t2)), _min3(np.maximum(t1, t2))
  return np.where((t_near <= t_far) & (t_near > 0), t_near, NO_HIT)


def _box_normal(o, d, lo, hi):
  """Outward normal [R, 3] of the face where each ray enters its box (lo, hi [R, 3])."""
  inv = 1.0 / nudge_zeros(d)
  axis = np.minimum((lo - o) * inv, (hi - o) * inv).argmax(-1)
  rows = np.arange(len(d))
  normal = np.zeros_like(d)
  normal[rows, axis] = -np.sign(d[rows, axis])
  return normal


def unit_box_entry(o, d):
  """Entry t [R] of rays into the canonical box [−0.5, 0.5]³ (inf when missed); rays that
  start inside enter at 0."""
  inv = 1.0 / nudge_zeros(d)
  t1, t2 = (-0.5 - o) * inv, (0.5 - o) * inv
  t_near = np.maximum(_max3(np.minimum(t1, t2)), 0.0)
  t_far = _min3(np.maximum(t1, t2))
  return np.where(t_near <= t_far, t_near, NO_HIT)


def _ellipsoid_hits(o, d, center, radii):
  """Ray [R, 3] × one ellipsoid → entry t [R] and the (unnormalised) normal [R, 3]."""
  oc, dc = (o - center) / radii, d / radii
  a, b, c = (dc * dc).sum(-1), 2 * (oc * dc).sum(-1), (oc * oc).sum(-1) - 1
  disc = b * b - 4 * a * c
  t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
  t = np.where((disc >= 0) & (t > 0), t, NO_HIT)
  p = oc + np.minimum(t, 1e9)[:, None] * dc
  return t, p / radii


def _cylinder_hits(o, d, center, half, taper):
  """Ray [R, 3] × one vertical (tapered) cylinder → entry t [R] and normal [R, 3]."""
  rx, hy, rz = half
  ox, oy, oz = ((o - center) / (rx, 1, rz)).T
  dx, dy, dz = (d / (rx, 1, rz)).T
  # Radius factor k(y) = a + b·y: 1 at the bottom (y = +hy), `taper` at the top (y = −hy).
  a, b = (1 + taper) / 2, (1 - taper) / (2 * hy)
  k0, kd = a + b * oy, b * dy
  qa = dx * dx + dz * dz - kd * kd
  qb = 2 * (ox * dx + oz * dz - k0 * kd)
  qc = ox * ox + oz * oz - k0 * k0
  disc = qb * qb - 4 * qa * qc
  sq = np.sqrt(np.maximum(disc, 0))
  with np.errstate(divide='ignore', invalid='ignore'):
    roots = np.stack([(-qb - sq) / (2 * qa), (-qb + sq) / (2 * qa)], -1)
  side_y = oy[:, None] + roots * dy[:, None]
  ok = (disc[:, None] >= 0) & (roots > 0) & (np.abs(side_y) <= hy) & np.isfinite(roots)
  t_side = np.where(ok, roots, NO_HIT).min(-1)
  best = t_side
  ts = np.minimum(t_side, 1e9)
  px, py, pz = ox + ts * dx, oy + ts * dy, oz + ts * dz
  normal = np.stack([px / rx, -(a + b * py) * b, pz / rz], -1)
  for cap_y, k_cap, ny in ((-hy, taper, -1.0), (hy, 1.0, 1.0)):
    with np.errstate(divide='ignore', invalid='ignore'):
      t_cap = (cap_y - oy) / dy
    tc = np.where(np.isfinite(t_cap), t_cap, 0.0)
    inside = (ox + tc * dx) ** 2 + (oz + tc * dz) ** 2 <= k_cap * k_cap
    t_cap = np.where(inside & (t_cap > 0), t_cap, NO_HIT)
    closer = t_cap < best
    best = np.where(closer, t_cap, best)
    normal = np.where(closer[:, None], np.array([0.0, ny, 0.0]), normal)
  return best, normal


def cast(parts, origins, directions):
  """Nearest hit of rays with a union of parts (canonical frame).

  Returns t [R] (inf where missed), the canonical normal [R, 3] (unnormalised, pointing
  out of the solid) and the index of the part hit [R] (−1 where missed).
  """
  R = len(origins)
  t_best = np.full(R, NO_HIT)
  normal = np.zeros((R, 3))
  part_index = np.full(R, -1)
  boxes = [i for i, p in enumerate(parts) if p.kind == 'box']
  if boxes:
    c = np.array([parts[i].center for i in boxes])
    h = np.array([parts[i].half for i in boxes])
    t = _box_hits(origins, directions, c - h, c + h)
    j = t.argmin(-1)
    t = t[np.arange(R), j]
    better = t < t_best
    t_best = np.where(better, t, t_best)
    normal = np.where(better[:, None], _box_normal(origins, directions, (c - h)[j], (c + h)[j]),
                      normal)
    part_index = np.where(better, np.array(boxes)[j], part_index)
  for i, p in enumerate(parts):
    if p.kind == 'box':
      continue
    center, half = np.asarray(p.center), np.asarray(p.half)
    if p.kind == 'ellipsoid':
      t, n = _ellipsoid_hits(origins, directions, center, half)
    else:
      t, n = _cylinder_hits(origins, directions, center, half, p.taper)
    better = t < t_best
    t_best = np.where(better, t, t_best)
    normal = np.where(better[:, None], n, normal)
    part_index = np.where(better, i, part_index)
  return t_best, normal, part_index


def inside_part(part, points, eps=0.0):
  """Boolean [N]: points [N, 3] strictly inside `part` shrunk by eps (canonical units)."""
  q = points - np.asarray(part.center)
  half = np.asarray(part.half) - eps
  if np.any(half <= 0):
    return np.zeros(len(points), bool)
  if part.kind == 'box':
    return np.all(np.abs(q) < half, -1)
  if part.kind == 'ellipsoid':
    return ((q / half) ** 2).sum(-1) < 1
  rx, hy, rz = half
  k = (1 + part.taper) / 2 + (1 - part.taper) / 2 * q[:, 1] / hy
  return (np.abs(q[:, 1]) < hy) & ((q[:, 0] / rx) ** 2 + (q[:, 2] / rz) ** 2 < k * k)


def inside(parts, points, eps=0.0, skip=None):
  """Boolean [N]: points inside the union of parts (optionally skipping part `skip`)."""
  result = np.zeros(len(points), bool)
  for i, p in enumerate(parts):
    if i != skip:
      result |= inside_part(p, points, eps)
  return result
