"""Evaluation previews of one scene: input, ground-truth boxes, prediction, top-down map.

Four panels side by side, each the input's size under a caption strip: the input image,
ground-truth wireframes, predicted surface points with predicted wireframes, and a top-down
view of the world x–z plane. numpy and PIL only, so evaluation needs no renderer.
"""
import os

import numpy as np
from PIL import Image, ImageDraw

from scenediff_jax.geometry.boxes import EDGES, box_corners
from scenediff_jax.geometry.camera import world_to_camera_points

# One colour per class index, in geometry.classes.CLASSES order (bed, chair, sofa, table,
# desk, dresser, nightstand, sink, cabinet, lamp); tab10 with its grey swapped for gold, so
# that no class can be mistaken for the grey layout.
CLASS_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (255, 215, 0), (188, 189, 34), (23, 190, 207))
LAYOUT_COLOUR = (160, 160, 160)
TOP_DOWN_BACKGROUND = (40, 40, 40)  # dark, so every class colour and the greys stand out
CAPTION = 16  # pixels of caption strip above each panel
GAP = 4  # pixels between panels
NEAR = 0.05  # metres: camera-frame near plane that edges are clipped against
TITLES = ('input', 'ground truth', 'prediction', 'top-down')
FAINT = 0.4  # opacity of posterior samples drawn behind the consensus


def class_colour(c):
  return CLASS_COLOURS[int(c) % len(CLASS_COLOURS)]


def _clip_near(a, b, near=NEAR):
  """Camera-frame segment a–b cut to z ≥ near; None when it lies wholly behind the plane."""
  if a[2] < near and b[2] < near:
    return None
  if a[2] < near:  # then b[2] ≥ near > a[2], so the denominator is positive
    a = a + (near - a[2]) / (b[2] - a[2]) * (b - a)
  elif b[2] < near:
    b = b + (near - b[2]) / (a[2] - b[2]) * (a - b)
  return a, b


def _clip_rect(p, q, width, height, pad=4.0):
  """Liang–Barsky clip of a pixel segment to the image grown by `pad`; None when outside.

  Points just past the near plane can project millions of pixels away; PIL should only
  ever see coordinates near the canvas.
  """
  d = q - p
  t0, t1 = 0.0, 1.0
  for k, lo, hi in ((0, -pad, width + pad), (1, -pad, height + pad)):
    for den, num in ((-d[k], p[k] - lo), (d[k], hi - p[k])):
      if den == 0:
        if num < 0:
          return None
      elif den < 0:
        t0 = max(t0, num / den)
      else:
        t1 = min(t1, num / den)
  if t0 > t1:
    return None
  return p + t0 * d, p + t1 * d


def _draw_wireframe(draw, box, K, R, size, colour, width):
  """The 12 edges of a world box [7], near-clipped in the camera frame, then projected."""
  corners = world_to_camera_points(box_corners(np.asarray(box, np.float64)), R)
  for i, j in EDGES:
    segment = _clip_near(corners[i], corners[j])
    if segment is None:
      continue
    a, b = segment  # both have z ≥ NEAR, so the divisions below are safe
    pixels = _clip_rect((K @ a)[:2] / a[2], (K @ b)[:2] / b[2], *size)
    if pixels is not None:
      draw.line([tuple(pixels[0]), tuple(pixels[1])], fill=colour, width=width)


def _splat_points(image, points, classes, K, R, alpha=0.6):
  """Alpha-blends each object's world points [P_i, 3] in its class colour (nearest wins)."""
  h, w = image.shape[:2]
  chunks = [np.asarray(p, np.float64).reshape(-1, 3) for p in points]
  if not chunks:
    return image
  xyz = np.concatenate(chunks)
  rgb = np.concatenate([np.tile(class_colour(c), (len(p), 1)) for p, c in zip(chunks, classes)])
  pc = world_to_camera_points(xyz, R)
  front = pc[:, 2] > NEAR  # behind the camera: dropped before any division
  pc, rgb = pc[front], rgb[front].astype(np.float64)
  uv = np.round((pc @ K.T)[:, :2] / pc[:, 2:3])
  inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
  uv, z, rgb = uv[inside].astype(np.int64), pc[inside, 2], rgb[inside]
  order = np.argsort(-z)  # far first, so nearer points overwrite them
  flat_index = uv[order, 1] * w + uv[order, 0]
  colour = np.zeros((h * w, 3))
  hit = np.zeros(h * w, bool)
  colour[flat_index], hit[flat_index] = rgb[order], True
  out = image.reshape(-1, 3).astype(np.float64)
  out[hit] = (1 - alpha) * out[hit] + alpha * colour[hit]
  return np.round(out).astype(np.uint8).reshape(image.shape)


def _footprints(boxes):
  """Boxes [n, 7] → top-face corners [n, 4, 2] as world (x, z)."""
  return box_corners(np.asarray(boxes, np.float64).reshape(-1, 7))[:, :4][..., [0, 2]]


def _top_down(size, K, gt_boxes, gt_classes, pred_boxes, pred_classes, gt_layout, pred_layout,
              margin=0.08, faint_boxes=None):
  """World x–z plane seen from above: x right, z (forward) up, camera at x = 0 centred;
  `faint_boxes` [K, n, 7] (posterior samples of pred_boxes) thin and half-transparent."""
  w, h = size
  gt_fp, pred_fp = _footprints(gt_boxes), _footprints(pred_boxes)
  faint_fp = [_footprints(b) for b in (() if faint_boxes is None else faint_boxes)]
  layouts = [(_footprints(l)[0], c, lw) for l, c, lw in
             ((gt_layout, (120, 120, 120), 1), (pred_layout, (200, 200, 200), 3)) if l is not None]
  xz = np.concatenate([gt_fp.reshape(-1, 2), pred_fp.reshape(-1, 2), np.zeros((1, 2))] +
                      [fp for fp, _, _ in layouts] + [fp.reshape(-1, 2) for fp in faint_fp])
  # x = 0 stays on the centre column; a floor on the extents keeps empty scenes finite.
  half_x = max(np.abs(xz[:, 0]).max(), 0.5)
  z_min, z_span = xz[:, 1].min(), max(np.ptp(xz[:, 1]), 1.0)
  scale = min(w * (1 - 2 * margin) / (2 * half_x), h * (1 - 2 * margin) / z_span)

  def to_pixels(points):
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return [(w / 2 + x * scale, h * (1 - margin) - (z - z_min) * scale) for x, z in points]

  panel = Image.new('RGB', (w, h), TOP_DOWN_BACKGROUND)
  if faint_fp:
    panel = _faintly(panel, lambda draw: [
        draw.polygon(to_pixels(fp), outline=class_colour(c), width=1)
        for sample in faint_fp for fp, c in zip(sample, pred_classes)])
  draw = ImageDraw.Draw(panel)
  for fp, colour, width in layouts:
    draw.polygon(to_pixels(fp), outline=colour, width=width)
  for fps, classes, width in ((gt_fp, gt_classes, 1), (pred_fp, pred_classes, 3)):
    for fp, c in zip(fps, classes):
      draw.polygon(to_pixels(fp), outline=class_colour(c), width=width)
  # Camera: a small frustum with the horizontal field of view of K, a fixed size on screen.
  reach = 0.08 * min(w, h) / scale
  fx, cx = K[0, 0], K[0, 2]
  draw.polygon(to_pixels([(0, 0), (-cx / fx * reach, reach), ((w - cx) / fx * reach, reach)]),
               outline=(255, 255, 255), width=1)
  if scale < 0.4 * w:  # a 1 m scale bar, when one metre fits comfortably
    x0, y0 = 0.5 * margin * w, h - 0.5 * margin * h
    draw.line([(x0, y0), (x0 + scale, y0)], fill=(255, 255, 255), width=1)
    draw.text((x0 + scale + 3, y0 - 6), '1 m', fill=(255, 255, 255))
  return panel


def scene_preview(image, K, world_to_cam, gt_boxes, gt_classes, pred_boxes, pred_classes,
                  pred_points=None, gt_layout=None, pred_layout=None,
                  line_width=2) -> Image.Image:
  """Input | ground truth | prediction | top-down, each panel under a caption strip.

  image uint8 [H, W, 3]; K [3, 3]; world_to_cam [3, 3] (X_c = R · X_w); boxes [n, 7] in the
  world frame with integer classes [n]; pred_points an optional list of world points
  [P_i, 3] per predicted box; layouts optional room boxes [7]. Size (4W + 3·GAP, H + CAPTION).
  """
  image = np.asarray(image, np.uint8)
  h, w = image.shape[:2]
  K, R = np.asarray(K, np.float64), np.asarray(world_to_cam, np.float64)
  gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 7)
  pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 7)
  gt_classes = np.asarray(gt_classes).reshape(-1)
  pred_classes = np.asarray(pred_classes).reshape(-1)

  wireframes = lambda base, layout, boxes, classes: draw_wireframes(
      base, K, R, boxes, classes, layout, line_width)
  splatted = image if pred_points is None else _splat_points(image, pred_points, pred_classes,
                                                             K, R)
  panels = (Image.fromarray(image), wireframes(image, gt_layout, gt_boxes, gt_classes),
            wireframes(splatted, pred_layout, pred_boxes, pred_classes),
            _top_down((w, h), K, gt_boxes, gt_classes, pred_boxes, pred_classes, gt_layout,
                      pred_layout))
  return captioned_row(panels, TITLES)


def draw_wireframes(image, K, R, boxes, classes, layout=None, line_width=2,
                    faint_boxes=None) -> Image.Image:
  """The image with each box's projected wireframe in its class colour (the room box thin
  and grey, underneath); `faint_boxes` [K, n, 7] (posterior samples of the n boxes) are drawn
  first, thin and half-transparent."""
  h, w = np.asarray(image).shape[:2]
  panel = Image.fromarray(np.asarray(image, np.uint8))
  if faint_boxes is not None and len(faint_boxes):
    panel = _faintly(panel, lambda draw: [
        _draw_wireframe(draw, box, K, R, (w, h), class_colour(c), 1)
        for sample in faint_boxes for box, c in zip(sample, classes)])
  draw = ImageDraw.Draw(panel)
  if layout is not None:  # first, so objects are drawn over the room
    _draw_wireframe(draw, layout, K, R, (w, h), LAYOUT_COLOUR, 1)
  for box, c in zip(boxes, classes):
    _draw_wireframe(draw, box, K, R, (w, h), class_colour(c), line_width)
  return panel


def _faintly(panel, drawing, alpha=FAINT):
  """The panel with `drawing(ImageDraw)`'s lines blended in at `alpha`."""
  overlay = panel.copy()
  drawing(ImageDraw.Draw(overlay))
  return Image.blend(panel, overlay, alpha)


def captioned_row(panels, titles) -> Image.Image:
  """Equal-sized panels side by side, GAP apart, each under a CAPTION strip with its title."""
  w, h = panels[0].size
  canvas = Image.new('RGB', (len(panels) * w + (len(panels) - 1) * GAP, h + CAPTION),
                     (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  for k, (panel, title) in enumerate(zip(panels, titles)):
    canvas.paste(panel, (k * (w + GAP), CAPTION))
    draw.text((k * (w + GAP) + 3, 2), title, fill=(0, 0, 0))
  return canvas


def save_previews(previews, directory, prefix='scene'):
  """Writes previews as directory/prefix_000.png, ...; returns the paths."""
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i, preview in enumerate(previews):
    paths.append(os.path.join(directory, f'{prefix}_{i:03d}.png'))
    preview.save(paths[-1])
  return paths
