"""TFDS builder `sunrgbd`: SUN RGB-D scenes as preprocessed by Total3D/Im3D, converted from a
manual directory (the data cannot be downloaded by code) into our scene records.

Scenes without any object of our 10 classes are skipped. Images are resized to the builder
config's size (K, 2D boxes, depth and instances follow exactly: data_pipelines/resize.py).
Records add `scene_id` (SUN RGB-D's 1-based image index) and `flipped` (Total3D's mirrored
training copies, `<id>_flip.pkl`).
"""
import dataclasses
import functools
import json
import os
import pickle

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import features, sharded
from data_pipelines.sunrgbd import convert

VERSION = tfds.core.Version('1.0.0')
SHARD_SIZE = 500
DATA_FOLDER = 'sunrgbd_train_test_data'
SPLITS = ('train', 'test')


@dataclasses.dataclass(kw_only=True)
class SunrgbdConfig(tfds.core.BuilderConfig):
  height: int = 240
  width: int = 320


def _example(path, size):
  """The record of one pickle, or None when it has no object of our classes."""
  with open(path, 'rb') as f:
    data = pickle.load(f)
  name = os.path.basename(path)
  record = convert.convert(data, size, flipped='_flip' in name)
  if record is None:
    logging.info('%s has no object of our classes: skipped.', path)
    return None
  record['scene_id'] = np.int32(data.get('sequence_id', int(name.split('_')[0].split('.')[0])))
  record['flipped'] = np.bool_('_flip' in name)
  return record


class Sunrgbd(tfds.core.ShardBasedBuilder):
  """SUN RGB-D (Total3D/Im3D preprocessing): RGB, depth, instances, cameras, layouts, boxes."""

  VERSION = VERSION
  BUILDER_CONFIGS = [SunrgbdConfig(name='default', description='Images at 320x240.'),
                     SunrgbdConfig(name='full', height=480, width=640,
                                   description='Images at 640x480.')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
SUN RGB-D is read from Total3D's preprocessed release (the same files Im3D uses); code
never downloads it. Get `sunrgbd_train_test_data` and `splits` as Total3DUnderstanding's
README explains (github.com/yinyunie/Total3DUnderstanding, "Data preparation": the
preprocessed SUN RGB-D pickles, or Coop's SUN RGB-D toolbox plus utils/generate_data.py),
then point config.data.manual_dir at a folder laid out like their data/sunrgbd:
  <manual_dir>/{DATA_FOLDER}/<id>.pkl      one pickle per image (and <id>_flip.pkl)
  <manual_dir>/splits/train.json           JSON lists of pickle paths; only the file
  <manual_dir>/splits/test.json            names are used
e.g. --config.data.manual_dir=~/data/Total3DUnderstanding/data/sunrgbd
"""

  @staticmethod
  def missing_files(manual_dir: str) -> list:
    wanted = [os.path.join('splits', f'{s}.json') for s in SPLITS] + [DATA_FOLDER]
    return [w for w in wanted if not os.path.exists(os.path.join(manual_dir, w))]

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=features.scene_features(
            c.height, c.width, flipped=features.tensor((), np.bool_)),
        homepage='https://rgbd.cs.princeton.edu/',
    )

  def _shard_iterators_per_split(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    c = self.builder_config
    make = functools.partial(_example, size=(c.height, c.width))
    return {split: sharded.shard_generators(make, split_files(manual_dir, split),
                                            f'sunrgbd {split}', SHARD_SIZE,
                                            preload=('data_pipelines.sunrgbd.convert',))
            for split in SPLITS}


def split_files(manual_dir, split):
  """The pickles a split lists, found by file name in <manual_dir>/sunrgbd_train_test_data;
  listed files that are missing are reported and skipped (Im3D does the same)."""
  with open(os.path.join(manual_dir, 'splits', f'{split}.json')) as f:
    listed = json.load(f)
  paths = [os.path.join(manual_dir, DATA_FOLDER, os.path.basename(p)) for p in listed]
  present = [p for p in paths if os.path.exists(p)]
  if len(present) < len(paths):
    logging.warning('%d of the %d pickles that splits/%s.json lists are missing; using the rest.',
                    len(paths) - len(present), len(paths), split)
  return present
