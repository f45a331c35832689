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
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds
import tqdm

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


def _tensor(shape, dtype, compress=False):
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding='zlib' if compress else 'none')


class SynthRooms(tfds.core.ShardBasedBuilder):
  """Procedural furnished rooms with RGB, depth, instances, cameras and 3D boxes."""

  VERSION = VERSION
  BUILDER_CONFIGS = [builder_config('tiny'), builder_config('default')]

  def _info(self):
    c = self.builder_config.scene
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': _tensor((c.height, c.width, 3), np.uint8, compress=True),
            'depth': _tensor((c.height, c.width), np.float32, compress=True),
            'instances': _tensor((c.height, c.width), np.int32, compress=True),
            'scene_id': _tensor((), np.int32),
            'K': _tensor((3, 3), np.float32),
            'world_to_cam': _tensor((3, 3), np.float32),
            'layout': _tensor((7,), np.float32),
            'objects': tfds.features.FeaturesDict({
                'class': _tensor((None,), np.int32, compress=True),
                'bbox2d': _tensor((None, 4), np.float32, compress=True),
                'box3d': _tensor((None, 7), np.float32, compress=True),
                'shape_id': _tensor((None,), np.int32, compress=True),
                'visible_pixels': _tensor((None,), np.int32, compress=True),
            }),
        }),
        homepage='https://github.com/scenediff-jax/scenediff_jax',
    )

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {split: _sharded(functools.partial(generate_scene, c.scene, split), range(count),
                            f'synth_rooms {split}')
            for split, count in (('train', c.num_train), ('test', c.num_test))}


def _sharded(make_example, keys, description):
  """Shard generators (as ShardBasedBuilder wants) that make examples in a process pool.

  Examples are independent functions of their key, so workers render them in parallel;
  one progress bar covers the split.
  """
  keys = list(keys)
  shards = [keys[i:i + SHARD_SIZE] for i in range(0, len(keys), SHARD_SIZE)] or [[]]
  progress = tqdm.tqdm(total=len(keys), desc=description, unit=' examples', leave=False)

  def shard_generator(shard_keys, last):
    def generate():
      with worker_pool() as pool:
        for key, example in zip(shard_keys, pool.imap(make_example, shard_keys, chunksize=4)):
          progress.update()
          yield key, example
      if last:
        progress.close()
    return generate

  return [shard_generator(shard, i == len(shards) - 1) for i, shard in enumerate(shards)]


# One BLAS thread per worker: the workers already fill the cores, and the small matrix
# products of rendering only lose time to thread hand-offs (about 30% on 2 cores).
_SINGLE_THREADED = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def worker_pool():
  """Worker processes for generation. forkserver: forking a parent that already runs
  threads (TFDS, jax) can deadlock, and spawning re-imports everything for every pool."""
  workers = int(os.environ.get('SYNTH_ROOMS_WORKERS', os.cpu_count() or 1))
  saved = {k: os.environ.get(k) for k in _SINGLE_THREADED}
  os.environ.update(_SINGLE_THREADED)  # inherited by the server and workers started now
  try:
    if 'forkserver' in multiprocessing.get_all_start_methods():
      context = multiprocessing.get_context('forkserver')
      context.set_forkserver_preload(['data_pipelines.synth_rooms.scene'])
    else:
      context = multiprocessing.get_context('spawn')
    return context.Pool(workers)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k)
      else:
        os.environ[k] = v


class SynthShapes(tfds.core.ShardBasedBuilder):
  """The canonical shapes of SynthRooms: surface points, normals and occupancy samples."""

  VERSION = VERSION
  BUILDER_CONFIGS = [builder_config('tiny'), builder_config('default')]

  def _info(self):
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'shape_id': _tensor((), np.int32),
            'class': _tensor((), np.int32),
            'style': _tensor((), np.int32),
            'size': _tensor((3,), np.float32),
            'surface': tfds.features.FeaturesDict({
                'points': _tensor((c.surface_points, 3), np.float32, compress=True),
                'normals': _tensor((c.surface_points, 3), np.float32, compress=True),
            }),
            'occupancy': tfds.features.FeaturesDict({
                'points': _tensor((c.occupancy_points, 3), np.float32, compress=True),
                'inside': _tensor((c.occupancy_points,), np.bool_, compress=True),
            }),
        }),
    )

  def _shard_iterators_per_split(self, dl_manager):
    del dl_manager
    c = self.builder_config
    return {split: _sharded(functools.partial(_shape_example, c), c.scene.bank().all_ids(split).tolist(),
                            f'synth_shapes {split}')
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
