"""TFDS builders for SynthRooms: `synth_rooms` (scenes) and `synth_shapes` (the canonical
shapes their objects use, for the shape autoencoder). Both write array_record files and are
read through TFDS data sources, without TensorFlow.

They are `ShardBasedBuilder`s rather than `GeneratorBasedBuilder`s: the latter's shuffler
spills to disk through `tf.io.gfile` once a split passes 1 GB (the default train split
does), which needs TensorFlow. Writing shard by shard needs no shuffler, keeps memory
bounded by the shard size, and stores examples in generation order, so example i of a
split is scene (or shape) i.
"""
import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import features, sharded
from data_pipelines.synth_rooms import furniture, shape_bank
from data_pipelines.synth_rooms.scene import SceneConfig, generate_scene

VERSION = tfds.core.Version('1.0.0')
SHARD_SIZE = 250  # examples per array_record file; the writer holds one shard in memory
SIZES = {  # name: (train scenes, test scenes, shapes per class for train, for test)
    'tiny': (24, 8, 4, 2),
    'default': (4000, 500, 60, 15),
}


@dataclasses.dataclass(kw_only=True)
class SynthRoomsConfig(tfds.core.BuilderConfig):
  num_train: int = 4000
  num_test: int = 500
  scene: SceneConfig = SceneConfig()
  surface_points: int = 4096
  occupancy_points: int = 8192


def builder_config(size: str = 'default', seed: int = 0) -> SynthRoomsConfig:
  """The config of a size ('tiny' or 'default'); seeds other than 0 get their own name."""
  if size not in SIZES:
    raise ValueError(f'Unknown SynthRooms size {size!r}; expected one of {sorted(SIZES)}.')
  num_train, num_test, shapes_train, shapes_test = SIZES[size]
  return SynthRoomsConfig(
      name=size if seed == 0 else f'{size}_seed{seed}',
      description=f'{num_train} train / {num_test} test scenes at 256x192, seed {seed}.',
      num_train=num_train, num_test=num_test,
      scene=SceneConfig(seed=seed, shapes_per_class_train=shapes_train,
                        shapes_per_class_test=shapes_test))


class SynthRooms(tfds.core.ShardBasedBuilder):
  """Procedural furnished rooms with RGB, depth, instances, cameras and 3D boxes."""

  VERSION = VERSION
  BUILDER_CONFIGS = [builder_config('tiny'), builder_config('default')]

  def _info(self):
    c = self.builder_config.scene
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=features.scene_features(c.height, c.width),
        homepage='https://github.com/scenediff-jax/scenediff_jax',
    )

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {split: _sharded(functools.partial(generate_scene, c.scene, split), range(count),
                            f'synth_rooms {split}')
            for split, count in (('train', c.num_train), ('test', c.num_test))}


def _sharded(make_example, keys, description):
  return sharded.shard_generators(make_example, keys, description, SHARD_SIZE,
                                  preload=('data_pipelines.synth_rooms.scene',))


def worker_pool():
  return sharded.worker_pool(preload=('data_pipelines.synth_rooms.scene',))


class SynthShapes(tfds.core.ShardBasedBuilder):
  """The canonical shapes of SynthRooms: surface points, normals and occupancy samples."""

  VERSION = VERSION
  BUILDER_CONFIGS = [builder_config('tiny'), builder_config('default')]

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=features.shape_features(
            c.surface_points, c.occupancy_points, style=features.tensor((), np.int32)),
    )

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {split: _sharded(functools.partial(_shape_example, c),
                            c.scene.bank().all_ids(split).tolist(), f'synth_shapes {split}')
            for split in shape_bank.SPLITS}


def _shape_example(config: SynthRoomsConfig, shape_id: int) -> dict:
  bank = config.scene.bank()
  shape = bank.shape(shape_id)
  rng = np.random.default_rng([config.scene.seed, 104729, shape_id])
  points, normals = shape_bank.surface_samples(shape, config.surface_points, rng)
  queries, inside = shape_bank.occupancy_samples(shape, config.occupancy_points, rng)
  return {
      'shape_id': shape_id,
      'class': bank.class_of(shape_id),
      'style': furniture.styles(shape.class_name).index(shape.style),
      'size': shape.size.astype(np.float32),
      'surface': {'points': points, 'normals': normals},
      'occupancy': {'points': queries, 'inside': inside},
  }
