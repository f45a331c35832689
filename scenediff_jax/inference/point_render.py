"""Quick looks at shapes without a rasteriser: orthographic z-buffered point splats.

Used to put reconstructions next to their inputs in evaluation outputs; shading by the
surface normal for meshes, by depth for bare point clouds.
"""
import numpy as np
from PIL import Image
import trimesh

from scenediff_jax.geometry import boxes

# An oblique view from the front-left and above (y is down, the front faces −z).
_VIEW = boxes.rotation_y(np.radians(-35)) @ np.array(
    [[1, 0, 0], [0, np.cos(0.45), -np.sin(0.45)], [0, np.sin(0.45), np.cos(0.45)]])
_LIGHT = np.array([0.4, -0.7, -0.6]) / np.linalg.norm([0.4, -0.7, -0.6])


def splat(points, shade, size=160, extent=0.9):
  """Points [N, 3] (canonical frame) with brightness [N] → grey image [size, size]."""
  p = points @ _VIEW.T
  cols = np.clip(((p[:, 0] / extent + 1) / 2 * (size - 1)).round().astype(int), 0, size - 1)
  rows = np.clip(((p[:, 1] / extent + 1) / 2 * (size - 1)).round().astype(int), 0, size - 1)
  order = np.argsort(-p[:, 2])  # far first, so nearer points overwrite them
  image = np.full((size + 1) * (size + 1), 1.0)
  for dr, dc in ((0, 1), (1, 0), (1, 1), (0, 0)):  # 2×2 splats close the gaps
    image[(rows[order] + dr) * (size + 1) + cols[order] + dc] = shade[order]
  return (image.reshape(size + 1, size + 1)[:size, :size] * 255).astype(np.uint8)


def render_points(points, size=160):
  z = (points @ _VIEW.T)[:, 2]
  shade = 0.25 + 0.6 * (z.max() - z) / max(np.ptp(z), 1e-6)
  return splat(points, shade, size)


def render_mesh(mesh: trimesh.Trimesh, size=160, count=150_000):
  if len(mesh.faces) == 0:
    return np.full((size, size), 255, np.uint8)
  points, face = trimesh.sample.sample_surface(mesh, count, seed=0)
  normals = mesh.face_normals[face]
  return splat(points, 0.2 + 0.75 * np.abs(normals @ _LIGHT), size)


def side_by_side(previews, size=160, gap=4) -> Image.Image:
  """Rows of input points | reconstruction | ground truth, for (points, mesh, mesh) tuples."""
  rows = []
  for points, reconstruction, truth in previews:
    tiles = [render_points(np.asarray(points), size), render_mesh(reconstruction, size),
             render_mesh(truth, size)]
    spacer = np.full((size, gap), 255, np.uint8)
    rows.append(np.concatenate([tiles[0], spacer, tiles[1], spacer, tiles[2]], 1))
    rows.append(np.full((gap, rows[-1].shape[1]), 255, np.uint8))
  return Image.fromarray(np.concatenate(rows[:-1], 0))
