"""Repeated layers under nn.scan (models/layer_stacks.py): a scanned run computes what the
same layers applied one by one compute, the layouts convert both ways, and the scene model's
parameters unstack to exactly the layout that workdirs trained before the scan hold."""
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax.models import layer_stacks

LEGACY_LAYOUT = os.path.join(os.path.dirname(__file__), 'data', 'unrolled_layout_default.json')


class Layer(nn.Module):
  """x, shared, own → x': a layer with a broadcast argument and a per-layer one."""
  width: int

  @nn.compact
  def __call__(self, x, shared, own):
    return jnp.tanh(nn.Dense(self.width)(x) + nn.LayerNorm()(shared) * own)


class Scanned(nn.Module):
  @nn.compact
  def __call__(self, x, shared, own):
    x, every = layer_stacks.run(Layer, 'Layer', 1, 4, x, shared, own,
                                in_axes=(nn.broadcast, 0), emit=True, width=6)
    y, one = layer_stacks.run(Layer, 'Layer', 5, 1, x, shared, own[:1], in_axes=(nn.broadcast, 0),
                              emit=True, width=6)
    return y, every, one


class Unrolled(nn.Module):
  @nn.compact
  def __call__(self, x, shared, own):
    every = []
    for i in range(4):
      x = Layer(6, name=f'Layer_{i + 1}')(x, shared, own[i])
      every.append(x)
    y = Layer(6, name='Layer_5')(x, shared, own[0])
    return y, jnp.stack(every), y[None]


def test_a_scanned_run_computes_the_layers_one_by_one():
  rng = np.random.default_rng(0)
  x, shared = rng.standard_normal((2, 3, 6)), rng.standard_normal((2, 3, 6))
  own = rng.standard_normal((4, 2, 3, 6))
  params = Scanned().init(jax.random.key(0), x, shared, own)
  assert set(params['params']) == {'Layer_1_to_4', 'Layer_5'}
  # One layer's parameters per slice of the leading axis, and different ones (split rngs).
  kernels = params['params']['Layer_1_to_4']['Dense_0']['kernel']
  assert kernels.shape == (4, 6, 6) and not np.allclose(kernels[0], kernels[1])
  unrolled = layer_stacks.unstack(params)
  assert set(unrolled['params']) == {f'Layer_{i}' for i in range(1, 6)}
  np.testing.assert_array_equal(unrolled['params']['Layer_3']['Dense_0']['kernel'], kernels[2])
  got = Scanned().apply(params, x, shared, own)
  want = Unrolled().apply(unrolled, x, shared, own)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_layouts_convert_both_ways_and_unrolled_trees_are_recognised():
  stacked = {'params': {'Block_0_to_2': {'k': np.arange(12.0).reshape(3, 4)},
                        'Other': {'b': np.ones(2)}},
             'opt_state': ({'mu': {'Block_0_to_2': {'k': np.zeros((3, 4))}}},)}
  unrolled = layer_stacks.unstack(stacked)
  assert set(unrolled['params']) == {'Block_0', 'Block_1', 'Block_2', 'Other'}
  np.testing.assert_array_equal(unrolled['params']['Block_1']['k'], [4, 5, 6, 7])
  assert layer_stacks.is_unrolled(unrolled, stacked)
  assert not layer_stacks.is_unrolled(stacked, stacked)
  # A checkpoint restored as plain dicts and lists (tuples come back as lists).
  restored = {'params': unrolled['params'], 'opt_state': [unrolled['opt_state'][0]]}
  again = layer_stacks.stack_like(restored, stacked)
  assert jax.tree.structure(again) == jax.tree.structure(stacked)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(stacked)):
    np.testing.assert_array_equal(a, b)
  del restored['params']['Block_2']
  with pytest.raises(KeyError, match='Block_0_to_2'):
    layer_stacks.stack_like(restored, stacked)


def test_the_scene_models_parameters_unstack_to_the_layout_of_workdirs_trained_before():
  """The default config's unrolled layout, written by the code before the scan (d7b1689):
  every array of an old checkpoint has one place, of the same shape, in the new model."""
  from configs import synthetic
  from scenediff_jax.models import scene_model
  abstract = scene_model.abstract_params(synthetic.get_config(), (64, 64))
  flat = layer_stacks.leaves_by_path(layer_stacks.unstack(abstract))
  got = {'/'.join(path): list(leaf.shape) for path, leaf in flat.items()}
  with open(LEGACY_LAYOUT) as f:
    want = json.load(f)
  assert got == want
  # And the model does scan: far fewer (stacked) arrays than layers one by one.
  assert len(jax.tree.leaves(abstract)) < 0.8 * len(want)
