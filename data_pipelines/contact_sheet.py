"""A PNG grid of dataset records for a human to look at: image, depth, instances, and the
image with projected 3D boxes (and 2D boxes) drawn on it. Works for any builder's records."""
import numpy as np
from PIL import Image, ImageDraw

from scenediff_jax import geometry

# A perceptually ordered colour ramp (dark blue → yellow) for depth.
_RAMP = np.array([[0.27, 0.00, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55],
                  [0.37, 0.79, 0.38], [0.99, 0.91, 0.14]])


def colorize_depth(depth):
  valid = depth > 0
  if not valid.any():
    return np.zeros(depth.shape + (3,), np.uint8)
  lo, hi = np.percentile(depth[valid], [1, 99])
  x = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1) * (len(_RAMP) - 1)
  rgb = np.stack([np.interp(x, np.arange(len(_RAMP)), _RAMP[:, c]) for c in range(3)], -1)
  return (np.where(valid[..., None], rgb, 0) * 255).astype(np.uint8)


def object_colors(n, seed=3):
  rng = np.random.default_rng(seed)
  return rng.integers(60, 256, (max(n, 1), 3)).astype(np.uint8)


def colorize_instances(instances):
  colors = object_colors(int(instances.max()) + 1)
  out = np.zeros(instances.shape + (3,), np.uint8)
  fg = instances >= 0
  out[fg] = colors[instances[fg]]
  return out


def _clip_segment(a, b, near=0.05):
  """Clips a camera-frame segment to z ≥ near; None when wholly behind."""
  if a[2] < near and b[2] < near:
    return None
  if a[2] < near or b[2] < near:
    t = (near - a[2]) / (b[2] - a[2])
    p = a + t * (b - a)
    a, b = (p, b) if a[2] < near else (a, p)
  return a, b


def draw_boxes(image, record, class_names, width=1):
  """The image with every object's projected 3D box and its 2D box."""
  canvas = Image.fromarray(image)
  draw = ImageDraw.Draw(canvas)
  K, R = np.asarray(record['K'], np.float64), np.asarray(record['world_to_cam'], np.float64)
  objects = record['objects']
  colors = object_colors(len(objects['class']))
  for k, box in enumerate(np.asarray(objects['box3d'], np.float64)):
    color = tuple(int(c) for c in colors[k])
    corners = geometry.camera.world_to_camera_points(geometry.box_corners(box), R)
    for i, j in geometry.boxes.EDGES:
      segment = _clip_segment(corners[i], corners[j])
      if segment is not None:
        (u0, v0), (u1, v1) = [(K @ p)[:2] / p[2] for p in segment]
        draw.line([(u0, v0), (u1, v1)], fill=color, width=width)
    x1, y1, x2, y2 = objects['bbox2d'][k]
    draw.rectangle([x1, y1, x2, y2], outline=(255, 255, 255))
    draw.text((x1 + 2, y1 + 1), class_names[int(objects['class'][k])], fill=color)
  return np.asarray(canvas)


def contact_sheet(records, class_names, gap=4) -> Image.Image:
  """One row per record: image | depth | instances | 3D boxes."""
  rows = []
  for r in records:
    image = np.asarray(r['image'])
    tiles = [image, colorize_depth(np.asarray(r['depth'])),
             colorize_instances(np.asarray(r['instances'])), draw_boxes(image, r, class_names)]
    h = image.shape[0]
    spacer = np.full((h, gap, 3), 255, np.uint8)
    row = np.concatenate(sum(([t, spacer] for t in tiles), [])[:-1], 1)
    rows.extend([row, np.full((gap, row.shape[1], 3), 255, np.uint8)])
  return Image.fromarray(np.concatenate(rows[:-1], 0))
