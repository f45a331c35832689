"""The device mesh and the shardings of batches and state (data parallel for now)."""
import jax
from jax.sharding import NamedSharding, PartitionSpec as P


def make_mesh():
  """A 1-D 'data' mesh over every device."""
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh):
  return NamedSharding(mesh, P('data'))


def replicated(mesh):
  return NamedSharding(mesh, P())
