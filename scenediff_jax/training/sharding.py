"""The device mesh and the shardings of batches and state.

The mesh comes from the config, e.g. `config.mesh = (('data', -1),)` (pure data parallel)
or `(('data', -1), ('model', 2))`; −1 takes the devices left. Batches are split along
'data'. With a 'model' axis the state is sharded fsdp-style: every array of at least
`MIN_SHARDED_SIZE` elements (the dense kernels of the denoiser and the image encoder's
ROI head, their Adam moments and EMA copies) is split along its largest dimension that the
axis divides; everything smaller stays replicated.
"""
import math

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_PARALLEL = (('data', -1),)
MIN_SHARDED_SIZE = 1 << 16  # elements; smaller arrays are not worth the communication


def make_mesh(axes=DATA_PARALLEL, devices=None):
  """A mesh over `devices` (default: all) with the named axes of `axes`, [(name, size)]."""
  devices = jax.devices() if devices is None else devices
  names = tuple(str(name) for name, _ in axes)
  sizes = [int(size) for _, size in axes]
  if names[0] != 'data' or len(set(names)) != len(names) or sizes.count(-1) > 1:
    raise ValueError(f'config.mesh={axes} must start with a "data" axis, name each axis once '
                     'and leave at most one size as -1.')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices) or min(sizes) < 1:
    raise ValueError(f'config.mesh={axes} does not fit the {len(devices)} devices '
                     f'({jax.default_backend()}): the sizes must multiply to the device count.')
  return jax.make_mesh(tuple(sizes), names, axis_types=(jax.sharding.AxisType.Auto,) * len(names),
                       devices=devices)


def batch_sharding(mesh):
  return NamedSharding(mesh, P('data'))


def replicated(mesh):
  return NamedSharding(mesh, P())


def array_sharding(mesh, shape):
  """fsdp-style sharding of one state array (see the module docstring)."""
  if 'model' not in mesh.axis_names or math.prod(shape) < MIN_SHARDED_SIZE:
    return replicated(mesh)
  ways = mesh.shape['model']
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % ways == 0:
      return NamedSharding(mesh, P(*[('model' if d == dim else None) for d in range(len(shape))]))
  return replicated(mesh)


def state_sharding(mesh, state):
  """The sharding of every array of a state (or of its abstract shapes)."""
  return jax.tree.map(lambda x: array_sharding(mesh, np.shape(x)), state)
