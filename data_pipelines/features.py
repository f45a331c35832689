"""The TFDS features every builder stores: scene records and canonical shapes (DESIGN.md,
"Records and outputs"). Plain uint8/float `Tensor`s, zlib-compressed where large: TFDS's
Image feature needs TensorFlow to encode."""
import numpy as np
import tensorflow_datasets as tfds


def tensor(shape, dtype, compress=False):
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding='zlib' if compress else 'none')


def scene_features(height: int, width: int, **extra) -> tfds.features.FeaturesDict:
  """A scene record at image size (H, W); `extra` adds builder-specific fields."""
  return tfds.features.FeaturesDict({
      'image': tensor((height, width, 3), np.uint8, compress=True),
      'depth': tensor((height, width), np.float32, compress=True),
      'instances': tensor((height, width), np.int32, compress=True),
      'scene_id': tensor((), np.int32),
      'K': tensor((3, 3), np.float32),
      'world_to_cam': tensor((3, 3), np.float32),
      'layout': tensor((7,), np.float32),
      'objects': tfds.features.FeaturesDict({
          'class': tensor((None,), np.int32, compress=True),
          'bbox2d': tensor((None, 4), np.float32, compress=True),
          'box3d': tensor((None, 7), np.float32, compress=True),
          'shape_id': tensor((None,), np.int32, compress=True),
          'visible_pixels': tensor((None,), np.int32, compress=True),
      }),
      **extra,
  })


def shape_features(surface_points: int, occupancy_points: int,
                   **extra) -> tfds.features.FeaturesDict:
  """A canonical shape: surface points and normals, occupancy samples and labels. The first
  half of the occupancy samples is uniform in the grid's box, the second half near the
  surface (training/shape_data.py relies on the order)."""
  return tfds.features.FeaturesDict({
      'shape_id': tensor((), np.int32),
      'class': tensor((), np.int32),
      'size': tensor((3,), np.float32),
      'surface': tfds.features.FeaturesDict({
          'points': tensor((surface_points, 3), np.float32, compress=True),
          'normals': tensor((surface_points, 3), np.float32, compress=True),
      }),
      'occupancy': tfds.features.FeaturesDict({
          'points': tensor((occupancy_points, 3), np.float32, compress=True),
          'inside': tensor((occupancy_points,), np.bool_, compress=True),
      }),
      **extra,
  })
