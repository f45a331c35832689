"""Timing helpers shared by the benchmark sections: medians after a warm-up, compile time
apart, and the machine's own matrix-product peak as the yardstick for utilisation."""
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  """Median wall time of fn() (which must block until its work is done) after `warmup` calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compile_seconds(jitted, *args, **kwargs):
  """(compiled, seconds to lower and compile, FLOPs of one call) of a jitted function."""
  start = time.perf_counter()
  lowered = jitted.lower(*args, **kwargs)
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  return compiled, seconds, lowered_flops(lowered)


def lowered_flops(lowered) -> float | None:
  """FLOPs of one call, from XLA's cost analysis of the lowered (unoptimised) program: the
  same on every backend (after compilation a GPU's library convolutions would count
  nothing). A loop body (lax.map, scan) counts once, not once per iteration."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  return float(cost['flops']) if cost and 'flops' in cost else None


def matmul_peak(quick: bool, dtype=jnp.float32) -> dict:
  """FLOP/s of a large square matrix product on the default device: the ceiling that model
  FLOP/s utilisation is measured against (same machine, same run, same precision)."""
  size = 1024 if quick else (8192 if jax.default_backend() == 'gpu' else 2048)
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (size, size), dtype)
  b = jax.random.normal(key_b, (size, size), dtype)
  product = jax.jit(lambda a, b: a @ b)
  seconds = median_seconds(lambda: product(a, b).block_until_ready(), 3 if quick else 10)
  return {'size': size, 'dtype': jnp.dtype(dtype).name, 'seconds': seconds,
          'flops_per_second': 2 * size ** 3 / seconds}


def machine() -> dict:
  device = jax.devices()[0]
  return {'platform': platform.platform(), 'processor': platform.processor(),
          'cpu_count': os.cpu_count(), 'backend': jax.default_backend(),
          'device': getattr(device, 'device_kind', str(device)), 'device_count': jax.device_count(),
          'jax': jax.__version__}
