"""Benchmarks: `python -m scenediff_jax.benchmark [--quick] [--out FILE.json]`.

Measured side by side in one run, medians over repeats after a warm-up (compilation timed
separately). Sections:
  nearest      the L_align nearest-neighbour kernel on the paper's workload (32 objects ×
               2,000 depth points → 16,000 predicted points): ours (value and gradient)
               against scipy's cKDTree (value only) and torch.cdist when torch is installed;
               time and peak memory
  mesh         mesh extraction at 128³: dense against coarse-to-fine (from 32³), decoder
               queries and seconds, and the Chamfer distance between the two meshes; on the
               trained shape autoencoder of --shape_workdir (a train_shape workdir) when
               given, else on an analytic sphere
  synth_rooms  scene generation (furnish + camera + render) at 256×192, one process and
               the builder's process pool
"""
import functools
import json
import os
import platform
import statistics
import time

from absl import app, flags, logging

_QUICK = flags.DEFINE_bool('quick', False, 'Fewer repeats, for a fast look.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results to this JSON file.')
_SHAPE_WORKDIR = flags.DEFINE_string(
    'shape_workdir', None, 'A workdir of --mode=train_shape whose model the mesh section uses.')


def _median_seconds(fn, repeats):
  fn()  # warm-up: imports, caches
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_nearest(quick: bool) -> dict:
  import tracemalloc

  import jax
  import jax.numpy as jnp
  import numpy as np
  from scipy.spatial import cKDTree

  from scenediff_jax.geometry import nearest_sq_dist

  objects, depth_points, predicted = (8 if quick else 32), 2000, 16000
  repeats = 3 if quick else 5
  rng = np.random.default_rng(0)
  # Predicted points come in clusters (one per Gaussian), depth points on a nearby surface.
  centers = rng.uniform(-0.5, 0.5, (objects, 16, 1, 3))
  pred = (centers + 0.08 * rng.normal(size=(objects, 16, predicted // 16, 3))).reshape(
      objects, predicted, 3).astype(np.float32)
  depth = (rng.uniform(-0.5, 0.5, (objects, depth_points, 3))).astype(np.float32)

  loss = lambda d, p: jnp.mean(nearest_sq_dist(d, p))
  value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  start = time.perf_counter()
  compiled = value_and_grad.lower(depth, pred).compile()
  compile_seconds = time.perf_counter() - start
  ours = _median_seconds(lambda: jax.block_until_ready(compiled(depth, pred)), repeats)
  ours_memory = compiled.memory_analysis().temp_size_in_bytes
  # Plain autodiff of the untiled minimum: compiled only, to read the memory it would need.
  dense = jax.jit(jax.value_and_grad(lambda d, p: jnp.mean(jnp.min(
      jnp.sum((d[:, :, None] - p[:, None]) ** 2, -1), -1)), argnums=(0, 1)))
  dense = dense.lower(depth, pred).compile()

  def kdtree():
    for d, p in zip(depth, pred):
      cKDTree(p).query(d)

  tracemalloc.start()
  kdtree()
  kdtree_memory = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  kdtree_seconds = _median_seconds(kdtree, repeats)
  result = {
      'workload': f'{objects} objects x {depth_points} depth -> {predicted} predicted points',
      'ours_value_and_grad_seconds': ours,
      'ours_compile_seconds': compile_seconds,
      'ours_temp_memory_bytes': ours_memory,
      'dense_autodiff_temp_memory_bytes': dense.memory_analysis().temp_size_in_bytes,
      'kdtree_value_seconds': kdtree_seconds,
      'kdtree_peak_memory_bytes': kdtree_memory,
      'ours_over_kdtree_time': ours / kdtree_seconds,
  }
  try:
    import torch
  except ImportError:
    result['torch_cdist'] = 'torch is not installed'
  else:
    td, tp = torch.from_numpy(depth), torch.from_numpy(pred)
    torch_seconds = _median_seconds(lambda: torch.cdist(td, tp).min(-1), repeats)
    result['torch_cdist_value_seconds'] = torch_seconds
    result['torch_over_ours_time'] = torch_seconds / ours
  return result


def _trained_decoders(workdir, count):
  """Occupancy functions of `count` held-out shapes under the trained autoencoder."""
  import jax
  import jax.numpy as jnp
  from ml_collections import config_dict

  from data_pipelines import registry
  from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
  from scenediff_jax.training import checkpoints, shape_trainer

  with open(os.path.join(workdir, 'config.json')) as f:
    config = config_dict.ConfigDict(json.load(f))
  model = shape_trainer.make_model(config)
  source = registry.get_builder(config.data.shape_name, config.data_dir, config.data.size,
                                config.data.seed).as_data_source('test')
  n = config.shape_training.surface_points
  params = checkpoints.Checkpointer(os.path.join(workdir, 'checkpoints', 'shape')).restore()['params']
  decode = jax.jit(lambda g, i, q: model.apply(params, g, i, q, method=ShapeAutoencoder.occupancy))
  functions = []
  for index in range(0, len(source), max(len(source) // count, 1))[:count]:
    surface = source[index]['surface']['points'][:n]
    g, i = model.apply(params, jnp.asarray(surface)[None], method=ShapeAutoencoder.encode)
    functions.append(lambda q, g=g, i=i: decode(g, i, jnp.asarray(q)[None])[0])
  return functions


def bench_mesh(quick: bool, shape_workdir=None) -> dict:
  import numpy as np
  from scipy.spatial import cKDTree

  from scenediff_jax.inference import mesh as mesh_lib

  if shape_workdir:
    functions, source = _trained_decoders(shape_workdir, 2 if quick else 5), 'trained model'
  else:
    functions = [lambda q: 0.35 - np.linalg.norm(q, axis=-1)]
    source = 'analytic sphere'
  rows = []
  for fn in functions:
    fn(np.zeros((65536, 3), np.float32))  # compile once
    start = time.perf_counter()
    dense, dense_stats = mesh_lib.extract_mesh_dense(fn, 128)
    dense_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast, fast_stats = mesh_lib.extract_mesh(fn, 128, 32)
    fast_seconds = time.perf_counter() - start
    d1 = cKDTree(dense.vertices).query(fast.vertices)[0] if len(fast.vertices) else [np.nan]
    d2 = cKDTree(fast.vertices).query(dense.vertices)[0] if len(fast.vertices) else [np.nan]
    rows.append((dense_stats['queries'], fast_stats['queries'], dense_seconds, fast_seconds,
                 float(np.mean(np.square(d1)) + np.mean(np.square(d2)))))
  rows = np.array(rows)
  return {
      'source': source, 'shapes': len(rows),
      'dense_queries': float(np.median(rows[:, 0])), 'coarse_to_fine_queries': float(np.median(rows[:, 1])),
      'query_ratio': float(np.median(rows[:, 0] / rows[:, 1])),
      'dense_seconds': float(np.median(rows[:, 2])), 'coarse_to_fine_seconds': float(np.median(rows[:, 3])),
      'vertex_chamfer_between_meshes': float(np.median(rows[:, 4])),
      'grid_cell': 1.1 / 128,
  }


def bench_synth_rooms(quick: bool) -> dict:
  from data_pipelines.synth_rooms import builder
  from data_pipelines.synth_rooms.scene import generate_scene

  config = builder.builder_config('default').scene
  bank = config.bank()
  n, repeats = (8, 3) if quick else (32, 5)
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

    pooled = _median_seconds(in_pool, repeats)
  single = _median_seconds(one_process, repeats)
  return {
      'scenes_per_second_one_process': n / single,
      'scenes_per_second_pool': 2 * n / pooled,
      'pool_workers': workers,
      'image_size': [config.width, config.height],
  }


def main(argv):
  del argv
  results = {
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpu_count': os.cpu_count()},
      'nearest': bench_nearest(_QUICK.value),
      'mesh': bench_mesh(_QUICK.value, _SHAPE_WORKDIR.value),
      'synth_rooms': bench_synth_rooms(_QUICK.value),
  }
  text = json.dumps(results, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')
    logging.info('Wrote %s', _OUT.value)


if __name__ == '__main__':
  app.run(main)
