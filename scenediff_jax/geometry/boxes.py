"""Gravity-aligned oriented boxes: the 7-number layout, corners, yaw, point-in-box.

A box is [cx, cy, cz, w, h, d, yaw] in the world frame (metres): centre, full extents along
the box's own x, y, z, and yaw about the world's y axis (gravity, pointing down), with
R_y(θ) = [[cos θ, 0, sin θ], [0, 1, 0], [−sin θ, 0, cos θ]] and θ in [−π, π).
A point p of the canonical frame [−0.5, 0.5]³ sits at R_y(θ) · (size ⊙ p) + centre.
"""
import numpy as np

from scenediff_jax.geometry.backend import namespace

# Corner order: the four top corners (y = −h/2, y points down) then the four bottom ones,
# each face going −x−z, +x−z, +x+z, −x+z. Edges below are pairs of these indices.
CORNER_SIGNS = np.array([[-1, -1, -1], [1, -1, -1], [1, -1, 1], [-1, -1, 1],
                         [-1, 1, -1], [1, 1, -1], [1, 1, 1], [-1, 1, 1]], np.float64)
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
         (0, 4), (1, 5), (2, 6), (3, 7))


def wrap_angle(angle):
  """Wraps angles into [−π, π)."""
  return (angle + np.pi) % (2 * np.pi) - np.pi


def quarter_turn_canonical(boxes):
  """The same boxes [..., 7] with yaw in [−π/4, π/4]: a box turned by a quarter turn with
  width and depth swapped is the same solid, so room boxes get one representation instead of
  four (a diffusion model would otherwise average between them)."""
  xp = namespace(boxes)
  turns = xp.round(boxes[..., 6] / (np.pi / 2))
  odd = (turns % 2) == 1
  width = xp.where(odd, boxes[..., 5], boxes[..., 3])
  depth = xp.where(odd, boxes[..., 3], boxes[..., 5])
  yaw = boxes[..., 6] - turns * (np.pi / 2)
  return xp.stack([boxes[..., 0], boxes[..., 1], boxes[..., 2], width, boxes[..., 4], depth, yaw],
                  -1)


def rotation_y(yaw):
  """R_y(yaw) [..., 3, 3]."""
  xp = namespace(yaw)
  c, s = xp.cos(yaw), xp.sin(yaw)
  o, z = xp.ones_like(c), xp.zeros_like(c)
  return xp.stack([xp.stack([c, z, s], -1), xp.stack([z, o, z], -1),
                   xp.stack([-s, z, c], -1)], -2)


def canonical_to_world(points, boxes):
  """Canonical points [..., P, 3] of boxes [..., 7] → world points [..., P, 3]."""
  R = rotation_y(boxes[..., 6])
  return (points * boxes[..., None, 3:6]) @ _swap(R) + boxes[..., None, :3]


def world_to_canonical(points, boxes):
  """World points [..., P, 3] → canonical coordinates of boxes [..., 7]."""
  R = rotation_y(boxes[..., 6])
  return ((points - boxes[..., None, :3]) @ R) / boxes[..., None, 3:6]


def _swap(m):
  xp = namespace(m)
  return xp.swapaxes(m, -1, -2)


def box_corners(boxes):
  """Boxes [..., 7] → corners [..., 8, 3] in CORNER_SIGNS order."""
  xp = namespace(boxes)
  return canonical_to_world(xp.asarray(CORNER_SIGNS / 2, dtype=boxes.dtype), boxes)


def box_from_corners(corners):
  """Corners [..., 8, 3] in CORNER_SIGNS order → boxes [..., 7]; inverse of `box_corners`.

  Least-squares over all corners, so slightly noisy corners give the closest box.
  """
  xp = namespace(corners)
  center = corners.mean(-2)
  signs = xp.asarray(CORNER_SIGNS, dtype=corners.dtype)
  # Each axis' full-extent vector is the signed mean of the corners along that sign.
  axes = xp.einsum('...kc,ka->...ac', corners - center[..., None, :], signs) / 4
  size = xp.linalg.norm(axes, axis=-1)
  x_axis = axes[..., 0, :]
  yaw = wrap_angle(xp.arctan2(-x_axis[..., 2], x_axis[..., 0]))
  return xp.concatenate([center, size, yaw[..., None]], -1)


def points_in_box(points, box, inflate=0.0):
  """Boolean [..., P]: which points [..., P, 3] lie in box [..., 7] grown by `inflate`×size."""
  xp = namespace(points, box)
  local = world_to_canonical(points, box)
  return xp.all(xp.abs(local) <= 0.5 * (1 + inflate), axis=-1)


def transform_boxes(boxes, rotation_yaw, translation):
  """Boxes after x ↦ R_y(rotation_yaw) · x + translation (a yaw-only rigid motion)."""
  xp = namespace(boxes)
  R = rotation_y(xp.asarray(rotation_yaw, dtype=boxes.dtype))
  center = boxes[..., :3] @ _swap(R) + translation
  yaw = wrap_angle(boxes[..., 6] + rotation_yaw)
  return xp.concatenate([center, boxes[..., 3:6], yaw[..., None]], -1)
