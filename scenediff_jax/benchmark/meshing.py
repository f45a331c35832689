"""Mesh extraction at 128³: dense marching cubes against coarse-to-fine (from 32³): decoder
queries, seconds, and the Chamfer distance between the two meshes (below one squared grid
cell, or coarse-to-fine lost more than the small parts its coarse grid can miss)."""
import json
import os
import time

import numpy as np

from scenediff_jax.inference import mesh as mesh_lib

RESOLUTION, COARSE = 128, 32


def _trained_decoders(workdir, count):
  """Occupancy functions of `count` held-out shapes under a workdir's shape autoencoder."""
  import jax
  import jax.numpy as jnp
  from ml_collections import config_dict

  from data_pipelines import registry
  from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
  from scenediff_jax.training import shape_trainer

  with open(os.path.join(workdir, 'config.json')) as f:
    config = config_dict.ConfigDict(json.load(f))
  model, params = shape_trainer.restore(config, workdir)
  source = registry.shape_builder(config, prepare=False).as_data_source('test')
  n = config.shape_training.surface_points
  decode = jax.jit(lambda g, i, q: model.apply(params, g, i, q, method=ShapeAutoencoder.occupancy))
  functions = []
  for index in range(0, len(source), max(len(source) // count, 1))[:count]:
    surface = source[index]['surface']['points'][:n]
    g, i = model.apply(params, jnp.asarray(surface)[None], method=ShapeAutoencoder.encode)
    functions.append(lambda q, g=g, i=i: decode(g, i, jnp.asarray(q)[None])[0])
  return functions


def bench_mesh(quick: bool, shape_workdir=None) -> dict:
  from scipy.spatial import cKDTree

  if shape_workdir:
    functions, source = _trained_decoders(shape_workdir, 2 if quick else 5), 'trained model'
  else:
    functions = [lambda q: 0.35 - np.linalg.norm(q, axis=-1)]
    source = 'analytic sphere'
  resolution, coarse = (64, 16) if quick else (RESOLUTION, COARSE)
  rows = []
  for fn in functions:
    fn(np.zeros((65536, 3), np.float32))  # compile once
    start = time.perf_counter()
    dense, dense_stats = mesh_lib.extract_mesh_dense(fn, resolution)
    dense_seconds = time.perf_counter() - start
    start = time.perf_counter()
    fast, fast_stats = mesh_lib.extract_mesh(fn, resolution, coarse)
    fast_seconds = time.perf_counter() - start
    if len(fast.vertices) and len(dense.vertices):
      d1 = cKDTree(dense.vertices).query(fast.vertices)[0]
      d2 = cKDTree(fast.vertices).query(dense.vertices)[0]
      chamfer = float(np.mean(np.square(d1)) + np.mean(np.square(d2)))
    else:
      chamfer = float('nan')
    rows.append((dense_stats['queries'], fast_stats['queries'], dense_seconds, fast_seconds,
                 chamfer))
  rows = np.array(rows)
  cell = (mesh_lib.DEFAULT_BOUNDS[1] - mesh_lib.DEFAULT_BOUNDS[0]) / resolution
  chamfer = float(np.median(rows[:, 4]))
  return {
      'source': source, 'shapes': len(rows), 'resolution': resolution, 'coarse_resolution': coarse,
      'dense_queries': float(np.median(rows[:, 0])),
      'coarse_to_fine_queries': float(np.median(rows[:, 1])),
      'query_ratio': float(np.median(rows[:, 0] / rows[:, 1])),
      'dense_seconds': float(np.median(rows[:, 2])),
      'coarse_to_fine_seconds': float(np.median(rows[:, 3])),
      'vertex_chamfer_between_meshes': chamfer, 'grid_cell': float(cell),
      'check': {'passed': bool(chamfer < cell ** 2),
                'what': 'the two meshes agree: Chamfer below one squared grid cell'},
  }
