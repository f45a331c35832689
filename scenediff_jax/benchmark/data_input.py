"""Input: SynthRooms generation (scenes/s, one process and the builder's pool) and the
training input pipeline (records → normalised, padded batches, prefetched as in training)
in batches/s, to set against the train step's consumption."""
import functools
import time

import numpy as np

from scenediff_jax.benchmark import timing
from scenediff_jax.geometry.normalization import SceneStatistics, ShapeLatents


def bench_generation(quick: bool) -> dict:
  from data_pipelines.synth_rooms import builder
  from data_pipelines.synth_rooms.scene import generate_scene

  config = builder.builder_config('default').scene
  bank = config.bank()
  n, repeats = (4, 2) if quick else (32, 5)
  counter = iter(range(10**9))

  def one_process():
    for _ in range(n):
      generate_scene(config, 'train', next(counter), bank)

  generate = functools.partial(generate_scene, config, 'train')
  with builder.worker_pool() as pool:
    workers = len(pool._pool)
    pool.map(generate, range(10**6, 10**6 + 2 * workers))  # start the workers

    def in_pool():
      start = next(counter) * 1000
      pool.map(generate, range(start, start + 2 * n), chunksize=4)

    pooled = timing.median_seconds(in_pool, repeats)
  single = timing.median_seconds(one_process, repeats)
  return {'scenes_per_second_one_process': n / single,
          'scenes_per_second_pool': 2 * n / pooled, 'pool_workers': workers,
          'image_size': [config.width, config.height]}


def _random_latents(source, config):
  """A shape-latent table covering every shape id of the split (values don't matter here)."""
  ids = max(int(source[i]['objects']['shape_id'].max(initial=0)) for i in range(len(source)))
  rng = np.random.default_rng(0)
  s = config.shape_model
  count = ids + 1
  return ShapeLatents(
      shape_ids=np.arange(count), is_train=np.ones(count, bool),
      gaussians=rng.normal(size=(count, s.num_parts, 16)).astype(np.float32),
      intrinsics=rng.normal(size=(count, s.num_parts, s.intrinsic_size)).astype(np.float32))


def bench_pipeline(quick: bool, load_config, workdir=None) -> dict:
  """Batches/s of scene_data.training_batches with prefetching, as the trainer reads them."""
  import os

  from data_pipelines import registry
  from scenediff_jax.training import scene_data

  config = load_config('smoke' if quick else 'default')
  source = registry.scene_builder(config).as_data_source('train')
  if workdir:
    with open(os.path.join(workdir, 'statistics.json')) as f:
      statistics = SceneStatistics.from_json(f.read())
    latents = ShapeLatents.load(os.path.join(workdir, 'shape_latents.npz'))
  else:
    latents = _random_latents(source, config)
    statistics = scene_data.compute_scene_statistics(source, 50, latents)
  batches = scene_data.training_batches(source, statistics, latents, config)
  count = 8 if quick else 60
  iterator = scene_data.prefetched(batches, 0)
  first = next(iterator)
  start = time.perf_counter()
  for _ in range(count):
    batch = next(iterator)
  seconds = time.perf_counter() - start
  direct = batches[count]  # the same batch read without prefetching
  same = all(np.array_equal(batch[k], direct[k]) for k in direct)
  return {'config': config.name, 'batch_size': config.training.batch_size,
          'batches_per_second': count / seconds,
          'scenes_per_second': count * config.training.batch_size / seconds,
          'prefetched_equals_direct': bool(same and set(first) == set(direct))}


def bench_input(quick: bool, load_config, workdir=None) -> dict:
  pipeline = bench_pipeline(quick, load_config, workdir)
  return {'generation': bench_generation(quick), 'pipeline': pipeline,
          'check': {'passed': pipeline['prefetched_equals_direct'],
                    'what': 'the prefetched batch equals the batch read directly'}}
