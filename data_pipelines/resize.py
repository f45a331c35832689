"""Resizes a photo and everything measured on it to the fixed size a builder stores.

Real datasets come in many sizes; the models batch images of one size. Colour is resampled
bilinearly; depth and instance maps take the nearest source pixel (blending would invent
depths between an object and the wall behind it); K and 2D boxes follow exactly, with pixel
centres at integer coordinates (geometry/camera.py `scale_intrinsics`).
"""
import numpy as np
from PIL import Image

from scenediff_jax.geometry import camera


def _nearest(array, height, width):
  rows = np.minimum(((np.arange(height) + 0.5) * array.shape[0] / height).astype(int),
                    array.shape[0] - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * array.shape[1] / width).astype(int),
                    array.shape[1] - 1)
  return array[rows][:, cols]


def resize_view(image, K, size, depth=None, instances=None, bbox2d=None):
  """(image uint8 [h, w, 3], K, …) → the same view at size (H, W): a dict with `image`, `K`
  and, where given, `depth`, `instances` and `bbox2d` ([n, 4] x1, y1, x2, y2 pixels)."""
  height, width = size
  h, w = image.shape[:2]
  scale_x, scale_y = width / w, height / h
  resized = Image.fromarray(np.asarray(image, np.uint8)).resize((width, height),
                                                                 Image.Resampling.BILINEAR)
  out = {'image': np.asarray(resized, np.uint8),
         'K': camera.scale_intrinsics(np.asarray(K, np.float64), scale_x, scale_y)}
  if depth is not None:
    out['depth'] = _nearest(np.asarray(depth, np.float32), height, width)
  if instances is not None:
    out['instances'] = _nearest(np.asarray(instances, np.int32), height, width)
  if bbox2d is not None:
    scale = np.array([scale_x, scale_y, scale_x, scale_y])
    out['bbox2d'] = (np.asarray(bbox2d, np.float64) + 0.5) * scale - 0.5
  return out
