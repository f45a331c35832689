"""The L_align nearest-neighbour kernel on the paper's workload: 32 objects, 2,000 depth
points each, 16,000 predicted points (1,000 per Gaussian). Ours (value and gradient, on the
default device) against scipy's cKDTree (value only, one CPU thread) and torch.cdist (value
only, on torch's GPU when it has one), with memory, and checked against cKDTree."""
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax.benchmark.timing import compile_seconds, median_seconds
from scenediff_jax.geometry import nearest_sq_dist


def workloads(objects, depth_points, predicted, gaussians=16, seed=0):
  """{name: (depth [O, M, 3], predicted [O, N, 3])}, float32. Predicted points come in
  clusters, one per Gaussian (as sampled for L_align). 'aligned': the depth points are
  another sample of the same surface 3 cm away (a good x̂₀, late in training); 'far': they
  fill the object's box regardless of the prediction (a poor x̂₀, early in training)."""
  rng = np.random.default_rng(seed)
  centers = rng.uniform(-0.5, 0.5, (objects, gaussians, 1, 3))
  cluster = lambda count: (centers + 0.08 * rng.normal(size=(objects, gaussians, count, 3))
                           ).reshape(objects, -1, 3)
  predicted_points = cluster(predicted // gaussians).astype(np.float32)
  return {
      'aligned': ((cluster(depth_points // gaussians) + 0.03).astype(np.float32), predicted_points),
      'far': (rng.uniform(-0.5, 0.5, (objects, depth_points, 3)).astype(np.float32),
              predicted_points),
  }


def _kdtree(depth, predicted):
  from scipy.spatial import cKDTree
  return np.stack([cKDTree(p).query(d)[0] for d, p in zip(depth, predicted)]) ** 2


def _torch_cdist(depth, predicted, repeats):
  try:
    import torch
  except ImportError:
    return {'torch_cdist': 'torch is not installed'}
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  td, tp = torch.from_numpy(depth).to(device), torch.from_numpy(predicted).to(device)

  def run():
    torch.cdist(td, tp).min(-1)
    if device == 'cuda':
      torch.cuda.synchronize()

  return {'torch_cdist_device': device, 'torch_cdist_value_seconds': median_seconds(run, repeats)}


def bench_nearest(quick: bool) -> dict:
  objects, depth_points, predicted = (4, 500, 4000) if quick else (32, 2000, 16000)
  repeats = 3 if quick else 5
  loss = lambda d, p: jnp.mean(nearest_sq_dist(d, p))
  value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
  # Plain autodiff of the untiled minimum, compiled only: the memory it would need.
  dense = jax.jit(jax.value_and_grad(lambda d, p: jnp.mean(jnp.min(
      jnp.sum((d[:, :, None] - p[:, None]) ** 2, -1), -1)), argnums=(0, 1)))
  shape = lambda *s: jax.ShapeDtypeStruct(s, jnp.float32)
  dense_memory = dense.lower(shape(objects, depth_points, 3), shape(objects, predicted, 3)
                             ).compile().memory_analysis().temp_size_in_bytes
  result = {'workload': f'{objects} objects x {depth_points} depth -> {predicted} predicted points'}
  for name, (depth, points) in workloads(objects, depth_points, predicted).items():
    compiled, compile_time, _ = compile_seconds(value_and_grad, depth, points)
    ours = median_seconds(lambda: jax.block_until_ready(compiled(depth, points)), repeats)
    reference = _kdtree(depth, points)
    mine = np.asarray(nearest_sq_dist(depth, points))
    tracemalloc.start()
    _kdtree(depth, points)
    kdtree_memory = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    kdtree = median_seconds(lambda: _kdtree(depth, points), repeats)
    row = {
        'ours_value_and_grad_seconds': ours,
        'ours_compile_seconds': compile_time,
        'ours_temp_memory_bytes': compiled.memory_analysis().temp_size_in_bytes,
        'dense_autodiff_temp_memory_bytes': dense_memory,
        'kdtree_value_seconds': kdtree,
        'kdtree_peak_memory_bytes': kdtree_memory,
        'ours_over_kdtree_time': ours / kdtree,
        # Exactness against the KD-tree, in m² for objects of about 1 m.
        'max_error_vs_kdtree': float(np.max(np.abs(mine - reference))),
        'mean_sq_distance': float(np.mean(reference)),
        **_torch_cdist(depth, points, repeats),
    }
    if 'torch_cdist_value_seconds' in row:
      row['torch_over_ours_time'] = row['torch_cdist_value_seconds'] / ours
    result[name] = row
  result['check'] = {'passed': all(result[n]['max_error_vs_kdtree'] < 1e-6
                                   for n in ('aligned', 'far')),
                     'what': 'squared distances equal cKDTree\'s within 1e-6 m² (float32 '
                             'rounding of |p|² − 2q·p at 1 m)'}
  return result
