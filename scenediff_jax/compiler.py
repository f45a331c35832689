"""XLA options for the jitted programs that run the image encoder's convolutions.

On a CPU, XLA (jax 0.12) hands every convolution to YNNPACK by default. XLA's own
convolutions are 2.2–2.7× faster on the paper-size ROI head (256 ROIs of 8×8, 512
channels, 3×3), forward and backward, and the paper-size train step runs 1.55× faster
without YNNPACK's convolutions (BENCHMARKS.md, section 2). YNNPACK keeps what it does best:
matrix products fused with their reductions (the nearest-neighbour kernel's first level).
Other backends keep their defaults.
"""
import functools

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
