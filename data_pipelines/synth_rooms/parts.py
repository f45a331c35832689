"""Solid primitives that furniture is built from, in an object's canonical frame.

A shape is a union of parts. Every part is axis-aligned in the canonical frame (DESIGN.md:
the object's box is [-0.5, 0.5]^3, y points down, the front faces -z), so that the
anisotropic scale and yaw of the pose map it to an oriented solid of the same kind.
Three kinds cover our furniture:
  box       half = half extents (x, y, z)
  cylinder  axis along y; half = (radius_x, half_height, radius_z); `taper` = radius at the
            top (y = center - half_y, since y is down) over the radius at the bottom
  ellipsoid half = radii (x, y, z)
"""
import dataclasses

import numpy as np

KINDS = ('box', 'cylinder', 'ellipsoid')


@dataclasses.dataclass(frozen=True)
class Part:
  kind: str
  center: tuple[float, float, float]
  half: tuple[float, float, float]
  taper: float = 1.0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'Unknown part kind {self.kind!r}; expected one of {KINDS}.')
    if min(self.half) <= 0:
      raise ValueError(f'Part half extents must be positive, got {self.half}.')
    if self.kind != 'cylinder' and self.taper != 1.0:
      raise ValueError('Only cylinders can taper.')

  def bounds(self) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (lo, hi) of the part."""
    c, h = np.asarray(self.center, float), np.asarray(self.half, float)
    if self.kind == 'cylinder' and self.taper > 1.0:
      h = h * np.array([self.taper, 1.0, self.taper])
    return c - h, c + h


def box(lo, hi) -> Part:
  """A box part from its two corners (any order per axis)."""
  lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
  return Part('box', tuple((lo + hi) / 2), tuple((hi - lo) / 2))


def cylinder(center_xz, y_top, y_bottom, radius_x, radius_z=None, taper=1.0) -> Part:
  """A vertical cylinder between heights y_top < y_bottom (y is down)."""
  radius_z = radius_x if radius_z is None else radius_z
  y_top, y_bottom = min(y_top, y_bottom), max(y_top, y_bottom)
  return Part('cylinder', (center_xz[0], (y_top + y_bottom) / 2, center_xz[1]),
              (radius_x, (y_bottom - y_top) / 2, radius_z), taper)


def ellipsoid(center, radii) -> Part:
  return Part('ellipsoid', tuple(center), tuple(radii))


def parts_bounds(parts) -> tuple[np.ndarray, np.ndarray]:
  lo, hi = zip(*(p.bounds() for p in parts))
  return np.min(lo, axis=0), np.max(hi, axis=0)


def normalize_to_unit_box(parts) -> tuple[list[Part], np.ndarray]:
  """Scales parts (built in metres) anisotropically so their union fills [-0.5, 0.5]^3.

  Returns the canonical parts and the size (extent in metres along x, y, z) that maps them
  back: metres = size * canonical. The object's 3D box is then tight by construction.
  """
  lo, hi = parts_bounds(parts)
  size = hi - lo
  mid = (lo + hi) / 2
  canonical = [
      Part(p.kind, tuple((np.asarray(p.center) - mid) / size),
           tuple(np.asarray(p.half) / size), p.taper) for p in parts
  ]
  return canonical, size
