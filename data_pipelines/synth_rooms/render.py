"""Ray-traced RGB, depth and instance maps of a furnished room, vectorised over pixels.

Each object is intersected in its canonical frame (raytrace.py) with the rays of the pixels
its projected box covers; the room is the inside of its box. With camera rays scaled to
z = 1 the ray parameter is the depth, so depth and instances agree exactly with the boxes.
"""
import dataclasses

import numpy as np

from data_pipelines.synth_rooms import raytrace
from scenediff_jax import geometry

# Base colours per class (RGB in [0, 1]), varied per object.
CLASS_COLORS = np.array([
    [0.78, 0.74, 0.68], [0.55, 0.36, 0.22], [0.36, 0.45, 0.62], [0.62, 0.46, 0.30],
    [0.50, 0.40, 0.32], [0.46, 0.31, 0.21], [0.56, 0.42, 0.29], [0.90, 0.90, 0.92],
    [0.72, 0.66, 0.56], [0.95, 0.88, 0.66]])
LIGHT = np.array([0.35, -1.0, -0.45]) / np.linalg.norm([0.35, -1.0, -0.45])  # towards the light


@dataclasses.dataclass
class Material:
  color: np.ndarray        # [3] base RGB
  part_tint: np.ndarray    # [P] brightness factor per part
  pattern: int             # 0 plain, 1 grain stripes, 2 woven checks
  frequency: float


def random_material(rng, class_index, n_parts) -> Material:
  color = np.clip(CLASS_COLORS[class_index] * rng.uniform(0.7, 1.25, 3), 0.05, 1.0)
  return Material(color, rng.uniform(0.75, 1.1, n_parts), int(rng.integers(3)),
                  float(rng.uniform(6, 30)))


def _pattern(material, p):
  if material.pattern == 1:
    return 1 + 0.1 * np.sin(material.frequency
                            * (p[:, 0] + 0.15 * np.sin(9 * p[:, 2] + 5 * p[:, 1])))
  if material.pattern == 2:
    s = np.sin(material.frequency * p[:, 0]) * np.sin(material.frequency * p[:, 1]) * np.sin(
        material.frequency * p[:, 2])
    return 1 + 0.07 * np.sign(s)
  return np.ones(len(p))


def _shade(normal_world, directions):
  n = normal_world / np.linalg.norm(normal_world, axis=-1, keepdims=True)
  view = directions / np.linalg.norm(directions, axis=-1, keepdims=True)
  n = np.where(((n * view).sum(-1) > 0)[:, None], -n, n)  # face the camera
  diffuse = np.maximum(n @ LIGHT, 0)
  headlight = np.abs((n * view).sum(-1))
  return 0.35 + 0.5 * diffuse + 0.2 * headlight


def _to_canonical(box, origins, directions):
  """World rays → rays in the canonical frame of `box` (same ray parameter)."""
  R = geometry.rotation_y(box[6])
  return (origins - box[:3]) @ R / box[3:6], directions @ R / box[3:6]


def _normal_to_world(box, normal):
  return (normal / box[3:6]) @ geometry.rotation_y(box[6]).T


def _pixel_window(box, K, world_to_cam, height, width):
  """Row/column slices covering the box's projection (the whole image if it is behind)."""
  corners = geometry.box_corners(box)
  uv, z = geometry.project(corners, K, world_to_cam)
  if np.any(z <= 1e-3):
    return slice(0, height), slice(0, width)
  lo = np.floor(uv.min(0)).astype(int)
  hi = np.ceil(uv.max(0)).astype(int) + 1
  return slice(max(lo[1], 0), min(hi[1], height)), slice(max(lo[0], 0), min(hi[0], width))


def render(room_box, room_material, objects, K, world_to_cam, height, width, rng,
           noise=0.015, cull=True):
  """Renders a scene given in the world frame.

  objects: a list of (box [7], parts, Material). Returns image uint8 [H, W, 3], depth
  float32 [H, W] (metres along z) and instances int32 [H, W] (−1 where the room shows).
  `cull=False` casts every ray against every part: slow, the reference for the culling.
  """
  pixels = geometry.camera.pixel_grid(height, width).reshape(-1, 2).astype(np.float64)
  directions = geometry.camera.camera_to_world_points(geometry.pixel_rays(pixels, K), world_to_cam)
  origins = np.zeros_like(directions)

  # The room: where each ray leaves the room box (the camera is inside).
  o, d = _to_canonical(room_box, origins, directions)
  d = raytrace.nudge_zeros(d)
  t_exit = (np.sign(d) * 0.5 - o) / d
  axis = t_exit.argmin(-1)
  depth = t_exit[np.arange(len(d)), axis]
  normal_c = np.zeros_like(d)
  normal_c[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
  hit_c = o + depth[:, None] * d
  color = _room_colors(room_material, hit_c, axis, d)
  shade = _shade(_normal_to_world(room_box, normal_c), directions)
  rgb = color * shade[:, None]
  instances = np.full(len(d), -1, np.int32)

  for k, (box, parts, material) in enumerate(objects):
    if cull:
      rows, cols = _pixel_window(box, K, world_to_cam, height, width)
      index = (np.arange(height)[rows, None] * width + np.arange(width)[None, cols]).reshape(-1)
    else:
      index = np.arange(height * width)
    if index.size == 0:
      continue
    o, d = _to_canonical(box, origins[index], directions[index])
    if cull:  # Only rays entering the object's box before what they hit so far can change.
      candidates = raytrace.unit_box_entry(o, d) < depth[index]
      index, o, d = index[candidates], o[candidates], d[candidates]
    t, normal, part = raytrace.cast(parts, o, d)
    closer = t < depth[index]
    if not closer.any():
      continue
    index, t, normal, part = index[closer], t[closer], normal[closer], part[closer]
    depth[index] = t
    instances[index] = k
    hit = o[closer] + t[:, None] * d[closer]
    color = material.color * (material.part_tint[part] * _pattern(material, hit))[:, None]
    rgb[index] = color * _shade(_normal_to_world(box, normal), directions[index])[:, None]

  rgb = rgb + rng.normal(0, noise, rgb.shape)
  image = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)
  return image, depth.astype(np.float32).reshape(height, width), instances.reshape(height, width)


@dataclasses.dataclass
class RoomMaterial:
  wall: np.ndarray
  floor: np.ndarray
  ceiling: np.ndarray
  plank_width: float


def random_room_material(rng) -> RoomMaterial:
  wall = rng.uniform(0.65, 0.95) * np.clip(1 + rng.normal(0, 0.06, 3), 0.8, 1.2)
  floor = (np.array([0.55, 0.42, 0.3]) * rng.uniform(0.6, 1.3)
           * np.clip(1 + rng.normal(0, 0.1, 3), 0.7, 1.3))
  return RoomMaterial(np.clip(wall, 0, 1), np.clip(floor, 0, 1), np.full(3, 0.92),
                      float(rng.uniform(0.03, 0.08)))


def _room_colors(material, hit, axis, directions):
  """Colours of the room surfaces at canonical hit points (axis 1 = floor or ceiling)."""
  floor = (axis == 1) & (directions[:, 1] > 0)
  ceiling = (axis == 1) & (directions[:, 1] <= 0)
  colors = np.broadcast_to(material.wall, hit.shape).copy()
  planks = 1 + 0.12 * np.sin(np.floor(hit[:, 0] / material.plank_width) * 2.3) * np.cos(
      np.floor(hit[:, 0] / material.plank_width) * 1.7)
  colors[floor] = material.floor * planks[floor, None]
  colors[ceiling] = material.ceiling
  return colors
