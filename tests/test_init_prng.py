"""The initialisation PRNG (training/init_prng.py) and the state the trainer builds with it."""
import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax import config_files
from scenediff_jax.benchmark import train_step as bench
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import optimizer, scene_trainer, sharding
from scenediff_jax.training.init_prng import init_key

N = 200_000


def _chi_square(u, bins=64):
  counts = np.histogram(np.asarray(u), bins=bins, range=(0, 1))[0]
  expected = len(u) / bins
  return float(((counts - expected) ** 2 / expected).sum())


def test_uniform_bits_are_uniform_and_uncorrelated():
  key = init_key(0)
  u = np.asarray(jax.random.uniform(key, (N,)))
  # 63 degrees of freedom: 120 is beyond the 99.999th percentile of a fair generator.
  assert _chi_square(u) < 120
  assert abs(np.corrcoef(u[1:], u[:-1])[0, 1]) < 5 / np.sqrt(N)  # neighbours independent
  bits = np.asarray(jax.random.bits(key, (N,), jnp.uint32))
  ones = np.unpackbits(bits.view(np.uint8)).mean()
  assert abs(ones - 0.5) < 5 * 0.5 / np.sqrt(32 * N)  # 5 σ: every bit a fair coin
  for width in (8, 16):  # the narrow widths take the top bits and cover their range
    narrow = np.asarray(jax.random.bits(key, (N,), jnp.dtype(f'uint{width}')))
    assert narrow.max() > 0.99 * 2 ** width and _chi_square(narrow / 2 ** width) < 120


def test_derived_keys_give_independent_streams():
  key = init_key(3)
  children = list(jax.random.split(key, 4)) + [jax.random.fold_in(key, i) for i in range(4)]
  streams = np.stack([np.asarray(jax.random.normal(k, (N,))) for k in children])
  correlation = np.corrcoef(streams)
  off_diagonal = correlation[~np.eye(len(children), dtype=bool)]
  assert np.abs(off_diagonal).max() < 5 / np.sqrt(N)
  # split's i-th child is not fold_in's i-th: the two derivations are kept apart.
  data = lambda k: np.asarray(jax.random.key_data(k))
  assert all((data(children[i]) != data(children[4 + i])).all() for i in range(4))
  assert np.allclose(streams.std(1), 1, atol=0.01)


def test_same_seed_same_draws_different_seed_different_ones():
  draw = lambda seed: np.asarray(jax.random.normal(init_key(seed), (64,)))
  np.testing.assert_array_equal(draw(1), draw(1))
  np.testing.assert_array_equal(draw(1), jax.jit(lambda k: jax.random.normal(k, (64,)))(
      init_key(1)))  # traced and eager agree
  assert not np.allclose(draw(1), draw(2))
  assert len({tuple(np.asarray(jax.random.key_data(init_key(s)))) for s in range(100)}) == 100


def _smoke_state(key):
  config = config_files.load('configs/synthetic.py').get_config('smoke')
  model = make_model(config)
  mesh = sharding.make_mesh()
  batch = bench.random_batch(config, config.training.batch_size)
  with jax.set_mesh(mesh):
    state = scene_trainer.create_state(config, model, scene_trainer.device_batch(batch, mesh),
                                       key)
  return config, state


def test_the_model_initialises_to_the_same_distributions_as_with_jax_keys():
  _, ours = _smoke_state(init_key(0))
  _, reference = _smoke_state(jax.random.key(0, impl='rbg'))  # threefry compiles 4x longer
  paths = jax.tree_util.tree_flatten_with_path(ours.params)[0]
  compared = 0
  for (path, got), want in zip(paths, jax.tree.leaves(reference.params)):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.std() == 0:  # constant initialisers (zeros, ones) give the same constants
      np.testing.assert_array_equal(got, want, err_msg=jax.tree_util.keystr(path))
    elif want.size >= 2000:
      compared += 1
      assert not np.allclose(got, want)
      np.testing.assert_allclose(got.std(), want.std(), rtol=0.1,
                                 err_msg=jax.tree_util.keystr(path))
      assert abs(got.mean()) < 0.1 * want.std() + abs(want.mean())
  assert compared >= 10


def test_the_optimizer_state_starts_as_its_init_and_the_ema_as_a_copy():
  config, state = _smoke_state(init_key(0))
  tx = optimizer.make_optimizer(config)
  want = jax.jit(tx.init)(state.params)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(want)
  for got, expected in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(want)):
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
  for ema, param in zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(ema, param)
    assert ema.unsafe_buffer_pointer() != param.unsafe_buffer_pointer()  # donation-safe
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
