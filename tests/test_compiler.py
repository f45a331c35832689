"""XLA options of the programs that run convolutions: accepted by this XLA, they keep
convolutions out of YNNPACK on a CPU (2.2–2.7× faster there, BENCHMARKS.md) and change
no number."""
import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax import compiler


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_this_xla_takes_the_cpu_options():
  # If a new jaxlib drops or renames the option, options() falls back to XLA's defaults
  # and the paper-size train step silently loses its 1.55×: fail here instead.
  assert jax.default_backend() != 'cpu' or compiler.options() == compiler.CPU_OPTIONS


def test_convolutions_leave_ynnpack_and_the_numbers_stay():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 8, 8, 64)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3, 3, 64, 64)) * 0.05, jnp.float32)
  if jax.default_backend() == 'cpu':
    text = compiler.jit(_conv).lower(x, w).compile().as_text()
    assert 'convolution(' in text and '__ynn_fusion' not in text
  loss = lambda x, w: jnp.sum(jnp.tanh(_conv(x, w)))
  ours = compiler.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
  default = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, w)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(default)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
