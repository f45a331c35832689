"""XLA options for the jitted programs that run the image encoder's convolutions.

On a CPU, XLA (jax 0.12) hands every convolution to YNNPACK by default. XLA's own
convolutions are 2.2–2.7× faster on the paper-size ROI head (256 ROIs of 8×8, 512
channels, 3×3), forward and backward, and the paper-size train step runs 1.55× faster
without YNNPACK's convolutions (BENCHMARKS.md, section 2). YNNPACK keeps what it does best:
matrix products fused with their reductions (the nearest-neighbour kernel's first level).
Other backends keep their defaults.
"""
import functools
import os

from absl import logging
import jax
import numpy as np

_TYPE = 'LIBRARY_FUSION_TYPE_'
CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': f'{_TYPE}DOT,{_TYPE}REDUCE'}


@functools.cache
def options() -> dict | None:
  """compiler_options for jax.jit: CPU_OPTIONS on a CPU whose XLA knows them, else None."""
  if jax.default_backend() != 'cpu':
    return None
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_OPTIONS).lower(np.float32(0)).compile()
  except Exception as error:  # pylint: disable=broad-except
    logging.warning('This XLA does not take %s (%s); keeping its default CPU fusions.',
                    CPU_OPTIONS, str(error).splitlines()[0])
    return None
  return dict(CPU_OPTIONS)


def jit(fun, **kwargs):
  """jax.jit(fun, **kwargs) compiled with options()."""
  return jax.jit(fun, compiler_options=options(), **kwargs)


def use_persistent_cache(directory: str | None) -> str | None:
  """Keeps compiled programs in `directory` (JAX's persistent compilation cache), so a
  restart, a second eval or predict compiles in seconds instead of minutes. Call it before
  the first compilation.

  Args:
    directory: the cache folder, created if missing (the programs' default is
      cli.default_compilation_cache_dir()); '' or None turns the cache off. The
      environment's JAX_COMPILATION_CACHE_DIR, when set, wins over it.
  Returns:
    The absolute cache directory, or None when off.
  """
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return jax.config.jax_compilation_cache_dir
  if not directory:
    return None
  directory = os.path.abspath(os.path.expanduser(directory))
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:  # a read-only home, say: compile every time rather than stop
    logging.warning('No compilation cache: %s cannot be made (%s).', directory, error)
    return None
  jax.config.update('jax_compilation_cache_dir', directory)
  # Also the many small programs (batching, sampling, metrics): together they are seconds.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
  logging.info('Compiled programs are cached in %s.', directory)
  return directory
