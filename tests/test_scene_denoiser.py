"""The scene denoiser: shapes, padding invariance, permutation equivariance, what ISA mixes,
time conditioning, purity and gradient flow (tiny sizes, perturbed params)."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax.models.scene_denoiser import SceneDenoiser

TINY = dict(pose_widths=(16, 16, 32), num_heads=2, head_dim=8, shape_width=16, shape_heads=2,
            gaussian_layers=(1, 1), intrinsic_layers=(1, 1), time_frequencies=16)
B, N, G, D, C = 2, 5, 4, 8, 12
MASK = np.array([[True, True, True, False, False], [True, True, True, True, True]])
KEYS = ('layout', 'pose', 'gaussians', 'intrinsics')


def make_inputs(seed, num_objects=N):
  k = jax.random.split(jax.random.key(seed), 5)
  noisy = {'layout': jax.random.normal(k[0], (B, 7)),
           'pose': jax.random.normal(k[1], (B, num_objects, 7)),
           'gaussians': jax.random.normal(k[2], (B, num_objects, G, 16)),
           'intrinsics': jax.random.normal(k[3], (B, num_objects, G, D))}
  # condition: the layout's, then one per object.
  return noisy, jnp.array([10, 700], jnp.int32), jax.random.normal(k[4], (B, 1 + num_objects, C))


def random_params(model, seed):
  """Generic random params of the right structure (no zero output heads, LayerNorm scales
  near 1), built with numpy: compiling `init` costs more than every test together."""
  noisy, t, condition = make_inputs(0)
  shapes = jax.eval_shape(model.init, jax.random.key(0), noisy, t, condition, MASK)
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    names = [p.key for p in path]
    noise = rng.standard_normal(shape.shape).astype(np.float32)
    # A scanned run's arrays have one leading axis more (models/layer_stacks.py).
    one = shape.shape[1:] if any('_to_' in name for name in names) else shape.shape
    if names[-1] == 'scale':
      return 1.0 + 0.1 * noise
    if names[-1] == 'bias':
      return 0.1 * noise
    if names[-1] == 'kernel':  # MHA's out kernel is [heads, head_dim, out]
      fan_in = np.prod(one[:-1]) if names[-2] == 'out' else one[0]
      return noise / np.sqrt(fan_in)
    return noise  # embeddings

  return jax.tree.map_with_path(leaf, shapes)


def build(use_isa, seed):
  model = SceneDenoiser(use_isa=use_isa, **TINY)
  return model, random_params(model, seed), jax.jit(model.apply)


@pytest.fixture(scope='module')
def isa():
  return build(True, 2)


@pytest.fixture(scope='module')
def no_isa():
  return build(False, 3)


def changed(a, b, atol=1e-4):
  return not np.allclose(a, b, atol=atol)


def test_shapes_finite_and_padding_zero(isa):
  _, params, apply = isa
  noisy, t, condition = make_inputs(4)
  out = apply(params, noisy, t, condition, MASK)
  for key in KEYS:
    assert out[key].shape == noisy[key].shape and out[key].dtype == jnp.float32
    assert np.all(np.isfinite(out[key]))
  for key in KEYS[1:]:
    assert np.all(np.asarray(out[key])[~MASK] == 0) and changed(np.asarray(out[key])[MASK], 0)


def test_fresh_params_predict_zero_noise():
  # Every output head is zero-initialised (a minimal config: `init` is slow to compile).
  model = SceneDenoiser(**{**TINY, 'pose_widths': (8,), 'gaussian_layers': (0, 1),
                           'intrinsic_layers': (0, 1)})
  noisy, t, condition = make_inputs(13)
  init_and_apply = jax.jit(lambda key: model.init_with_output(key, noisy, t, condition, MASK))
  out, params = init_and_apply(jax.random.key(0, impl='rbg'))
  for key in KEYS:
    np.testing.assert_array_equal(out[key], 0)
  assert any(np.any(np.asarray(p) != 0) for p in jax.tree.leaves(params))


def test_padding_never_changes_real_elements(isa):
  _, params, apply = isa
  noisy, t, condition = make_inputs(5)
  ref = apply(params, noisy, t, condition, MASK)
  # Garbage in the existing padding slots, and 3 more padded objects of garbage.
  garbage, _, garbage_condition = make_inputs(6, N + 3)
  big = {k: noisy[k] if k == 'layout' else
         jnp.where(np.pad(MASK, ((0, 0), (0, 3))).reshape(B, N + 3, *[1] * (noisy[k].ndim - 2)),
                   jnp.pad(noisy[k], [(0, 0), (0, 3)] + [(0, 0)] * (noisy[k].ndim - 2)),
                   100 * garbage[k])
         for k in KEYS}
  big_condition = jnp.where(np.pad(MASK, ((0, 0), (1, 3)), constant_values=True)[..., None],
                            jnp.pad(condition, ((0, 0), (0, 3), (0, 0))), 100 * garbage_condition)
  out = apply(params, big, t, big_condition, np.pad(MASK, ((0, 0), (0, 3))))
  np.testing.assert_allclose(out['layout'], ref['layout'], atol=1e-5)
  for key in KEYS[1:]:
    np.testing.assert_allclose(np.asarray(out[key])[:, :N][MASK], np.asarray(ref[key])[MASK],
                               atol=1e-5)
    assert np.all(np.asarray(out[key])[:, N:] == 0)


def test_permuting_objects_permutes_outputs(isa):
  _, params, apply = isa
  noisy, t, condition = make_inputs(7)
  perm = np.array([3, 0, 4, 1, 2])
  ref = apply(params, noisy, t, condition, MASK)
  permuted = {k: v if k == 'layout' else v[:, perm] for k, v in noisy.items()}
  out = apply(params, permuted, t, condition[:, np.concatenate([[0], 1 + perm])], MASK[:, perm])
  np.testing.assert_allclose(out['layout'], ref['layout'], atol=1e-5)
  for key in KEYS[1:]:
    np.testing.assert_allclose(out[key], ref[key][:, perm], atol=1e-5)


def change_object(noisy, condition, j):
  noisy = {k: v if k == 'layout' else v.at[:, j].add(1.0) for k, v in noisy.items()}
  return noisy, condition.at[:, 1 + j].add(1.0)


@pytest.mark.parametrize('use_isa', [False, True])
def test_objects_mix_only_through_isa(use_isa, isa, no_isa):
  _, params, apply = no_isa if not use_isa else isa
  noisy, t, condition = make_inputs(8)
  mask = np.ones((B, N), bool)
  ref = apply(params, noisy, t, condition, mask)
  changed_noisy, changed_condition = change_object(noisy, condition, 1)
  out = apply(params, changed_noisy, t, changed_condition, mask)
  others = np.array([0, 2, 3, 4])
  for key in KEYS[1:]:
    assert changed(out[key][:, 1], ref[key][:, 1])  # object 1 sees its own inputs
    if use_isa:
      for i in others:
        assert changed(out[key][:, i], ref[key][:, i], atol=1e-6), (key, i)
    else:
      np.testing.assert_allclose(out[key][:, others], ref[key][:, others], atol=1e-6)
  if use_isa:
    assert changed(out['layout'], ref['layout'], atol=1e-6)
  else:
    np.testing.assert_allclose(out['layout'], ref['layout'], atol=1e-6)


@pytest.mark.parametrize('use_isa', [False, True])
def test_the_layout_condition_reaches_the_layout(use_isa, isa, no_isa):
  _, params, apply = no_isa if not use_isa else isa
  noisy, t, condition = make_inputs(14)
  ref = apply(params, noisy, t, condition, MASK)
  out = apply(params, noisy, t, condition.at[:, 0].add(1.0), MASK)
  assert changed(out['layout'], ref['layout'])
  for key in KEYS[1:]:  # objects hear of it only through ISA
    if use_isa:
      assert changed(out[key], ref[key], atol=1e-6), key
    else:
      np.testing.assert_allclose(out[key], ref[key], atol=1e-6)


def test_time_conditioning(isa):
  _, params, apply = isa
  noisy, t, condition = make_inputs(9)
  ref = apply(params, noisy, t, condition, MASK)
  out = apply(params, noisy, t + 37, condition, MASK)
  for key in KEYS:
    assert changed(out[key], ref[key]), key


def test_jitted_apply_is_pure(isa):
  _, params, apply = isa
  noisy, t, condition = make_inputs(10)
  a = apply(params, noisy, t, condition, MASK)
  b = apply(params, jax.tree.map(np.asarray, noisy), np.asarray(t), np.asarray(condition), MASK)
  for key in KEYS:
    np.testing.assert_array_equal(a[key], b[key])


def test_every_param_gets_a_gradient(isa):
  model, params, _ = isa
  noisy, t, condition = make_inputs(11)
  target, _, _ = make_inputs(12)

  def loss(p):
    out = model.apply(p, noisy, t, condition, MASK)
    return sum(jnp.sum((out[k] - target[k]) ** 2) for k in KEYS)

  grads = jax.jit(jax.grad(loss))(params)
  dead = [k for k, g in flax.traverse_util.flatten_dict(grads['params']).items()
          if not np.any(np.asarray(g) != 0)]
  assert not dead, dead
