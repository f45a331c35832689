"""The optimizer with its small arrays packed into one vector (training/optimizer.py): pack
round-trips, AdamW takes the same steps packed as per array, and checkpoints saved with
per-array moments resume in the packed layout with the same numbers."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import synthetic
from scenediff_jax.benchmark import train_step as bench
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import checkpoints, optimizer, scene_trainer, sharding


def _smoke():
  config = synthetic.get_config('smoke')
  config.training.warmup_steps = 1  # a non-zero learning rate from the first update
  return config


def _tree(rng):
  """Small and large arrays (optimizer.SMALL elements or more), nested like parameters."""
  shapes = {'params': {'a': {'kernel': (3, 4), 'bias': (4,)}, 'big': (300, 256),
                       'b': (2, 3, 5), 'c': (), 'wide': (optimizer.SMALL,)}}
  return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def test_pack_round_trips_and_keeps_large_arrays_whole():
  tree = _tree(np.random.default_rng(2))
  packed = optimizer.pack(tree)
  assert [x.shape for x in packed] == [(12 + 4 + 30 + 1,), (300, 256), (optimizer.SMALL,)]
  again = optimizer.unpack(packed, tree)
  assert jax.tree.structure(again) == jax.tree.structure(tree)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(tree)):
    np.testing.assert_array_equal(a, b)


def test_packed_and_per_array_adamw_take_the_same_steps():
  config = _smoke()
  rng = np.random.default_rng(0)
  params = _tree(rng)
  packed_tx = optimizer.make_optimizer(config)
  per_array_tx = optimizer.make_optimizer(config, packed=False)
  states = {'packed': (params, packed_tx.init(params)),
            'per_array': (params, per_array_tx.init(params))}
  for step in range(4):
    # Large enough gradients at step 2 that clipping by the global norm takes part.
    scale = 50 if step == 2 else 1
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * scale, jnp.float32),
                         params)
    for name, tx in (('packed', packed_tx), ('per_array', per_array_tx)):
      p, s = states[name]
      updates, s = tx.update(grads, s, p)
      states[name] = (optax.apply_updates(p, updates), s)
  packed, per_array = states['packed'], states['per_array']
  for a, b, start in zip(*map(jax.tree.leaves, (packed[0], per_array[0], params))):
    assert not np.allclose(a, start)  # it did train
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # The per-array state, packed, is the packed one: what restoring an old checkpoint does.
  converted = optimizer.packed_moments_of(per_array[1])
  assert jax.tree.structure(converted) == jax.tree.structure(packed[1])
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(packed[1])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_checkpoint_with_per_array_moments_resumes_in_the_packed_layout(tmp_path):
  config = _smoke()
  model = make_model(config)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(bench.random_batch(config, config.training.batch_size),
                                       mesh)
    old = scene_trainer.create_state(config, model, batch, jax.random.key(3), packed_moments=False)
    rng = np.random.default_rng(1)
    moments = jax.tree.map(lambda x: jnp.asarray(rng.random(x.shape), x.dtype)
                           if x.dtype == jnp.float32 else x + 5, old.opt_state)
    old = old.replace(step=jnp.int32(5), opt_state=moments)
    directory = str(tmp_path / 'scene')
    checkpointer = checkpoints.Checkpointer(directory)
    checkpointer.save(5, old)
    checkpointer.close()
    checkpointer = checkpoints.Checkpointer(directory)
    state = scene_trainer.restore_state(checkpointer, config, model, batch, mesh)
    fresh = scene_trainer.abstract_state(config, model, batch, mesh)
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(fresh.opt_state)
    assert [x.shape for x in jax.tree.leaves(state)] == [x.shape for x in jax.tree.leaves(fresh)]
    assert int(state.step) == 5
    for got, want in zip(jax.tree.leaves((state.params, state.ema_params)),
                         jax.tree.leaves((old.params, old.ema_params))):
      np.testing.assert_array_equal(got, want)
    adam = state.opt_state[1][0]
    old_adam = old.opt_state[1][0]
    assert int(adam.count) == int(old_adam.count) == 5
    for got, want in ((adam.mu, old_adam.mu), (adam.nu, old_adam.nu)):
      assert got[0].size > 0  # (the smoke model's arrays are all small: one vector)
      assert len(got) == len(optimizer.pack(want))
      for a, b in zip(got, optimizer.pack(want)):
        np.testing.assert_array_equal(a, b)
    # Saved again, the packed layout restores as it is.
    checkpointer.save(6, state)
    checkpointer.close()
    checkpointer = checkpoints.Checkpointer(directory)
    again = scene_trainer.restore_state(checkpointer, config, model, batch, mesh)
    checkpointer.close()
    for got, want in zip(jax.tree.leaves(again), jax.tree.leaves(state)):
      np.testing.assert_array_equal(got, want)
