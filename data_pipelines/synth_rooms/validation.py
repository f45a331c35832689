"""SynthRooms validation scenes: test-split scenes past the built ones (indices num_test,
num_test + 1, ...), generated on demand.

They are drawn exactly like the test scenes (same generator, the test shapes, unseen rooms),
yet no test record is one of them, so settings can be chosen on them without looking at the
test split. Nothing is written: a scene is generated (about 0.1 s) when first read and kept.
"""
import numpy as np

from data_pipelines.synth_rooms import builder as builder_lib
from data_pipelines.synth_rooms.scene import generate_scene

DEFAULT_COUNT = 150


class ValidationScenes:
  """A data source (len, [i]) of `count` validation scenes of a SynthRooms builder config,
  each with the fields and dtypes a built record has."""

  def __init__(self, builder_config: builder_lib.SynthRoomsConfig, count: int = DEFAULT_COUNT):
    self.config, self.count = builder_config, count
    self.bank = builder_config.scene.bank()
    self.cache = {}

  def __len__(self):
    return self.count

  def __getitem__(self, i):
    i = int(i)
    if not 0 <= i < self.count:
      raise IndexError(f'validation scene {i} of {self.count}')
    if i not in self.cache:
      record = generate_scene(self.config.scene, 'test', self.config.num_test + i, self.bank)
      self.cache[i] = _as_stored(record)
    return self.cache[i]


def _as_stored(record):
  """The dtypes a TFDS record of data_pipelines/features.scene_features decodes to."""
  out = {k: np.asarray(v) for k, v in record.items() if k != 'objects'}
  out['image'] = out['image'].astype(np.uint8)
  for k in ('depth', 'K', 'world_to_cam', 'layout'):
    out[k] = out[k].astype(np.float32)
  out['instances'] = out['instances'].astype(np.int32)
  out['scene_id'] = np.int32(out['scene_id'])
  o = record['objects']
  out['objects'] = {'class': o['class'].astype(np.int32), 'bbox2d': o['bbox2d'].astype(np.float32),
                    'box3d': o['box3d'].astype(np.float32),
                    'shape_id': o['shape_id'].astype(np.int32),
                    'visible_pixels': o['visible_pixels'].astype(np.int32)}
  return out
