"""Picks numpy or jax.numpy for the geometry functions, by the type of their inputs."""
import numpy as np


def namespace(*arrays):
  """jax.numpy if any argument is a jax array or tracer, otherwise numpy.

  Geometry is written once against this namespace so that the data pipelines run it in
  plain numpy and the models run the very same code under jit.
  """
  for a in arrays:
    if type(a).__module__.startswith(('jax', 'jaxlib')):
      import jax.numpy as jnp  # Deferred so numpy-only users never initialise jax.
      return jnp
  return np
