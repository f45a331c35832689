"""Diffusion: schedule values and inverses, forward-noising moments, DDIM against DDPM, samplers
on data with known answers (a point mass, a Gaussian), determinism, jit, guidance."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax import diffusion

T = 1000
SCHEDULE = diffusion.linear_schedule()
RNG = np.random.default_rng(0)
# float64 reference values, derived here independently of the code under test.
BETAS64 = np.linspace(1e-4, 0.02, T)
ACP64 = np.cumprod(1.0 - BETAS64)


def _scene_tree(batch, n=3, g=4, d=5, scale=1.0):
  """A random state shaped like the scene diffusion's, float32."""
  shapes = {'layout': (batch, 7), 'pose': (batch, n, 7), 'gaussians': (batch, n, g, 16),
            'intrinsics': (batch, n, g, d)}
  return {k: (scale * RNG.normal(size=s)).astype(np.float32) for k, s in shapes.items()}


def _per_element(values, t, x):
  return values[t].reshape((-1,) + (1,) * (x.ndim - 1))


def _arbitrary_fn(x, t):
  """A fixed, non-trivial ε model that depends on x and on t."""
  scale = 1.0 + t.astype(jnp.float32) / T
  return jax.tree.map(
      lambda v: jnp.tanh(0.7 * v + 0.3) * scale.reshape((-1,) + (1,) * (v.ndim - 1)), x)


def _allclose_tree(a, b, **kw):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


def test_linear_schedule_values():
  s = SCHEDULE
  assert s.num_timesteps == T and s.betas.shape == (T,) and s.betas.dtype == jnp.float32
  np.testing.assert_allclose(s.betas[0], 1e-4, rtol=1e-6)
  np.testing.assert_allclose(s.betas[-1], 0.02, rtol=1e-6)
  np.testing.assert_allclose(s.betas, BETAS64, rtol=1e-6)
  np.testing.assert_allclose(s.alphas, 1.0 - BETAS64, rtol=1e-6)
  np.testing.assert_allclose(s.alphas_cumprod, ACP64, rtol=1e-5)
  np.testing.assert_allclose(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - ACP64), rtol=1e-5)
  assert np.all(np.diff(np.asarray(s.alphas_cumprod)) < 0)
  assert 0 < s.alphas_cumprod[-1] < 1e-4 < s.alphas_cumprod[0] < 1
  small = diffusion.linear_schedule(10, 1e-3, 0.5)
  np.testing.assert_allclose(small.alphas_cumprod, np.cumprod(1 - np.linspace(1e-3, 0.5, 10)),
                             rtol=1e-5)


def test_posterior_matches_ddpm_eq7():
  t = np.array([0, 1, 2, 37, 500, 998, 999])
  acp_prev = np.where(t > 0, ACP64[t - 1], 1.0)
  variance = BETAS64[t] * (1 - acp_prev) / (1 - ACP64[t])
  np.testing.assert_allclose(SCHEDULE.posterior_variance(jnp.asarray(t)), variance,
                             rtol=1e-5, atol=1e-12)
  assert SCHEDULE.posterior_variance(0) == 0.0
  x0, xt = _scene_tree(len(t)), _scene_tree(len(t))
  mean = SCHEDULE.posterior_mean(x0, xt, jnp.asarray(t))
  coef_x0 = BETAS64[t] * np.sqrt(acp_prev) / (1 - ACP64[t])
  coef_xt = (1 - acp_prev) * np.sqrt(1 - BETAS64[t]) / (1 - ACP64[t])
  for k in x0:
    c0 = _per_element(coef_x0, np.arange(len(t)), x0[k])
    ct = _per_element(coef_xt, np.arange(len(t)), x0[k])
    np.testing.assert_allclose(mean[k], c0 * x0[k] + ct * xt[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean[k][0], x0[k][0], rtol=1e-6)  # t = 0: the mean is x0


def test_predict_x0_and_eps_invert_add_noise():
  batch = 64
  t = RNG.integers(0, T, batch).astype(np.int32)
  t[:2] = 0, T - 1
  x0, noise = _scene_tree(batch), _scene_tree(batch)
  xt = jax.jit(SCHEDULE.add_noise)(x0, t, noise)
  for k in x0:  # each element noised at its own t
    expected = (np.sqrt(_per_element(ACP64, t, x0[k])) * x0[k]
                + np.sqrt(1 - _per_element(ACP64, t, x0[k])) * noise[k])
    np.testing.assert_allclose(xt[k], expected, rtol=1e-5, atol=1e-5)
  # 1/√ᾱ_999 ≈ 160 amplifies float32 rounding of x_t in x̂0: the tolerance allows for it.
  _allclose_tree(jax.jit(SCHEDULE.predict_x0)(xt, t, noise), x0, atol=3e-4)
  _allclose_tree(jax.jit(SCHEDULE.predict_eps)(xt, t, x0), noise, atol=3e-4)


def test_forward_noising_statistics():
  draws, ts = 20000, np.array([0, 100, 600, 999])
  x0 = {'a': np.array([1.5, -0.5, 0.0], np.float32), 'b': np.array([[2.0], [-3.0]], np.float32)}
  batch_x0 = jax.tree.map(lambda v: np.broadcast_to(v, (len(ts) * draws,) + v.shape), x0)
  t = np.repeat(ts, draws).astype(np.int32)
  noise = diffusion.tree_normal(jax.random.key(1), batch_x0)
  xt = jax.jit(SCHEDULE.add_noise)(batch_x0, t, noise)
  for k in x0:
    samples = np.asarray(xt[k]).reshape((len(ts), draws) + x0[k].shape)
    a = ACP64[ts].reshape((-1,) + (1,) * x0[k].ndim)
    std_err = np.sqrt(1 - a) / np.sqrt(draws)
    assert np.all(np.abs(samples.mean(1) - np.sqrt(a) * x0[k]) < 4.5 * std_err)
    # var of a sample variance: 2σ⁴/n.
    assert np.all(np.abs(samples.var(1) - (1 - a)) < 4.5 * (1 - a) * np.sqrt(2 / draws))


def test_sample_timesteps_uniform():
  t = SCHEDULE.sample_timesteps(jax.random.key(0), 20000)
  assert t.shape == (20000,) and t.dtype == jnp.int32
  assert int(t.min()) == 0 and int(t.max()) == T - 1
  assert abs(float(t.mean()) - (T - 1) / 2) < 4.5 * T / np.sqrt(12 * 20000)


def test_ddim_timesteps():
  np.testing.assert_array_equal(diffusion.ddim_timesteps(T, T), np.arange(T)[::-1])
  steps = diffusion.ddim_timesteps(T, 100)
  assert len(steps) == 100 and steps[0] == T - 1 and steps[-1] == 0
  assert np.all(np.diff(steps) < 0) and np.all(np.abs(np.diff(steps) + 10.09) < 1)
  np.testing.assert_array_equal(diffusion.ddim_timesteps(T, 1), [T - 1])
  for bad in (0, T + 1):
    with pytest.raises(ValueError):
      diffusion.ddim_timesteps(T, bad)


@jax.jit
def _ddpm_update(x_t, t, key):
  """DDPM's x_{t−1} = μ̃_t(x̂0, x_t) + √β̃_t z, with the z the samplers draw from key."""
  tt = jnp.full((_batch(x_t),), t, jnp.int32)
  x0 = SCHEDULE.predict_x0(x_t, tt, _arbitrary_fn(x_t, tt))
  std = jnp.sqrt(SCHEDULE.posterior_variance(t))
  return jax.tree.map(lambda m, z: m + std * z, SCHEDULE.posterior_mean(x0, x_t, tt),
                      diffusion.tree_normal(key, x_t))


def _batch(tree):
  return jax.tree.leaves(tree)[0].shape[0]


def test_ddim_eta1_step_is_ddpm_step():
  steps = diffusion.ddim_timesteps(T, T)
  ddim = jax.jit(functools.partial(diffusion.ddim_step, _arbitrary_fn, SCHEDULE))
  ddpm = jax.jit(functools.partial(diffusion.ddpm_step, _arbitrary_fn, SCHEDULE))
  x_t = _scene_tree(8, scale=1.5)
  for i, t in enumerate([999, 500, 37, 1, 0]):
    t_prev = int(np.append(steps, -1)[T - t])  # the step after t, with every step used
    assert t_prev == t - 1
    key = jax.random.key(i)
    expected = _ddpm_update(x_t, t, key)
    _allclose_tree(ddim(x_t, t, t_prev, key, 1.0), expected, rtol=1e-4, atol=2e-5)
    _allclose_tree(ddpm(x_t, t, key), expected, rtol=1e-4, atol=2e-5)
    if t > 0:  # and η = 0 is a different (deterministic) update
      assert not np.allclose(ddim(x_t, t, t_prev, key, 0.0)['pose'], expected['pose'],
                             atol=1e-3)


def test_ddim_every_step_eta1_reproduces_ddpm_sampler():
  template = {'pose': jax.ShapeDtypeStruct((4, 3, 7), jnp.float32),
              'layout': jax.ShapeDtypeStruct((4, 7), jnp.float32)}
  key = jax.random.key(3)
  ddpm = jax.jit(functools.partial(diffusion.ddpm_sample, _arbitrary_fn, SCHEDULE))(key, template)
  ddim = jax.jit(functools.partial(diffusion.ddim_sample, _arbitrary_fn, SCHEDULE, num_steps=T,
                                   eta=1.0))(key, template)
  _allclose_tree(ddim, ddpm, atol=2e-3)


def _oracle_point_mass(c):
  acp = jnp.asarray(ACP64, jnp.float32)

  def fn(x, t):
    def leaf(v, cv):
      a = acp[t].reshape((-1,) + (1,) * (v.ndim - 1))
      return (v - jnp.sqrt(a) * cv) / jnp.sqrt(1 - a)
    return jax.tree.map(leaf, x, c)
  return fn


def test_samplers_recover_point_mass():
  c = {'layout': np.array([0.3, -1.2, 2.0, 0.5, 0.5, 1.0, -2.5], np.float32),
       'pose': RNG.uniform(-2, 2, (3, 7)).astype(np.float32)}
  fn = _oracle_point_mass(c)
  template = {k: jax.ShapeDtypeStruct((16,) + v.shape, jnp.float32) for k, v in c.items()}
  key = jax.random.key(0)
  ddim = jax.jit(functools.partial(diffusion.ddim_sample, fn, SCHEDULE, num_steps=50))(
      key, template)
  ddpm = jax.jit(functools.partial(diffusion.ddpm_sample, fn, SCHEDULE))(key, template)
  for out in (ddim, ddpm):
    for k in c:
      np.testing.assert_allclose(out[k], np.broadcast_to(c[k], out[k].shape), atol=2e-3)


def _gaussian_chain_moments(mu, sigma, num_steps, eta):
  """Exact mean and std, per coordinate, of DDIM's output for N(μ, σ²) data and exact ε.

  Every update is linear in x_t for Gaussian data, so the chain's moments follow a scalar
  recursion (float64): the discretisation's bias, which the samples should reproduce.
  """
  steps = diffusion.ddim_timesteps(T, num_steps)
  offset, var = -np.sqrt(ACP64[-1]) * mu, np.ones_like(sigma)  # x_T ~ N(0, 1) vs N(√ᾱμ, ~1)
  for t, tp in zip(steps, np.append(steps[1:], -1)):
    a2, ap2 = ACP64[t], (ACP64[tp] if tp >= 0 else 1.0)
    v = a2 * sigma ** 2 + 1 - a2
    s2 = eta ** 2 * (1 - ap2) / (1 - a2) * (1 - a2 / ap2)
    gain = (np.sqrt(ap2 * a2) * sigma ** 2 + np.sqrt((1 - ap2 - s2) * (1 - a2))) / v
    offset, var = gain * offset, gain ** 2 * var + s2
  return mu + offset, np.sqrt(var)


@pytest.mark.parametrize('eta', [0.0, 1.0])
def test_ddim_samples_gaussian_data(eta):
  mu = {'a': np.array([0.5, -1.0, 2.0, 0.0]), 'b': np.array([[1.0, -0.3, 0.0], [0.2, 0.0, -2.0]])}
  sigma = {'a': np.array([0.3, 1.0, 2.0, 0.6]), 'b': np.array([[0.5, 1.5, 1.0], [0.8, 0.7, 1.2]])}
  acp = jnp.asarray(ACP64, jnp.float32)

  def exact_eps(x, t):  # E[ε | x_t] = √(1−ᾱ) (x_t − √ᾱ μ) / (ᾱσ² + 1 − ᾱ)
    def leaf(v, m, s):
      a = acp[t].reshape((-1,) + (1,) * (v.ndim - 1))
      return jnp.sqrt(1 - a) * (v - jnp.sqrt(a) * m) / (a * s ** 2 + 1 - a)
    return jax.tree.map(leaf, x, mu, sigma)

  n = 8192
  template = {k: jax.ShapeDtypeStruct((n,) + v.shape, jnp.float32) for k, v in mu.items()}
  out = jax.jit(functools.partial(diffusion.ddim_sample, exact_eps, SCHEDULE, num_steps=100,
                                  eta=eta))(jax.random.key(7), template)
  for k in mu:
    chain_mean, chain_std = _gaussian_chain_moments(mu[k], sigma[k], 100, eta)
    # 100 steps are a coarse discretisation: the output is a little narrower than the data.
    # (and starting from N(0, 1) rather than N(√ᾱ_T μ, ~1) leaves a bias of about √ᾱ_T μ σ).
    np.testing.assert_allclose(chain_mean, mu[k], atol=0.03)
    np.testing.assert_allclose(chain_std, sigma[k], rtol=0.1)
    samples = np.asarray(out[k], np.float64)
    assert np.all(np.abs(samples.mean(0) - chain_mean) < 4.5 * chain_std / np.sqrt(n))
    assert np.all(np.abs(samples.mean(0) - mu[k]) < 4.5 * sigma[k] / np.sqrt(n)
                  + np.abs(chain_mean - mu[k]))
    assert np.all(np.abs(samples.std(0) / chain_std - 1) < 4.5 / np.sqrt(2 * n))
    assert np.all(np.abs(samples.std(0) / sigma[k] - 1) < 4.5 / np.sqrt(2 * n)
                  + np.abs(chain_std / sigma[k] - 1))


SMALL = diffusion.linear_schedule(50, 1e-3, 0.2)  # short chains where only the wiring matters


def test_samplers_deterministic_per_key():
  template = {'pose': jnp.zeros((4, 3, 7)), 'gaussians': jax.ShapeDtypeStruct((4, 3, 2, 16),
                                                                              jnp.float32)}
  samplers = [jax.jit(functools.partial(diffusion.ddpm_sample, _arbitrary_fn, SMALL)),
              jax.jit(functools.partial(diffusion.ddim_sample, _arbitrary_fn, SMALL,
                                        num_steps=10, eta=0.0)),
              jax.jit(functools.partial(diffusion.ddim_sample, _arbitrary_fn, SMALL,
                                        num_steps=10, eta=1.0))]
  outs = []
  for sample in samplers:
    a, b = sample(jax.random.key(0), template), sample(jax.random.key(0), template)
    c = sample(jax.random.key(1), template)
    for k in template:
      assert a[k].shape == template[k].shape and a[k].dtype == jnp.float32
      np.testing.assert_array_equal(a[k], b[k])
      assert not np.allclose(a[k], c[k], atol=1e-2)
    outs.append(a)
  assert not np.allclose(outs[1]['pose'], outs[2]['pose'], atol=1e-2)  # η matters


def test_ddim_jit_matches_eager_and_clip_bounds_x0():
  template = {'layout': jax.ShapeDtypeStruct((6, 7), jnp.float32)}
  key = jax.random.key(5)
  jitted = jax.jit(functools.partial(diffusion.ddim_sample, _arbitrary_fn, SMALL, num_steps=7,
                                     eta=0.5))
  eager = diffusion.ddim_sample(_arbitrary_fn, SMALL, key, template, num_steps=7, eta=0.5)
  _allclose_tree(jitted(key, template), eager, rtol=1e-5, atol=1e-5)
  # A model whose x̂0 is far outside [−1, 1]: the last step returns x̂0, clipped or not.
  wild = lambda x, t: jax.tree.map(lambda v: -3.0 * v - 2.0, x)
  free = diffusion.ddim_sample(wild, SMALL, key, template, num_steps=7)
  clipped = diffusion.ddim_sample(wild, SMALL, key, template, num_steps=7, clip_x0=1.0)
  assert np.abs(free['layout']).max() > 1.5
  assert np.abs(clipped['layout']).max() <= 1.0 + 1e-6
  clipped_ddpm = diffusion.ddpm_sample(wild, SMALL, key, template, clip_x0=1.0)
  assert np.abs(clipped_ddpm['layout']).max() <= 1.0 + 1e-6


def test_classifier_free_guidance():
  x, t = _scene_tree(3), jnp.zeros((3,), jnp.int32)
  cond = lambda x, t: jax.tree.map(lambda v: 2.0 * v + 1.0, x)
  uncond = lambda x, t: jax.tree.map(lambda v: -v, x)

  def fails(x, t):
    raise AssertionError('must not be called')

  assert diffusion.guided_denoise_fn(cond, fails, 1.0) is cond
  _allclose_tree(diffusion.guided_denoise_fn(cond, fails, 1.0)(x, t), cond(x, t), rtol=0)
  _allclose_tree(diffusion.guided_denoise_fn(fails, uncond, 0.0)(x, t), uncond(x, t), rtol=0)
  c, u = cond(x, t), uncond(x, t)
  _allclose_tree(diffusion.guided_denoise_fn(cond, uncond, 2.0)(x, t),
                 jax.tree.map(lambda a, b: 2 * a - b, c, u), rtol=1e-6, atol=1e-6)
  # A traced scale (one compiled sampler for every scale) calls both.
  guided = jax.jit(lambda s: diffusion.guided_denoise_fn(cond, uncond, s)(x, t))
  _allclose_tree(guided(3.0), jax.tree.map(lambda a, b: 3 * a - 2 * b, c, u),
                 rtol=1e-6, atol=1e-5)
  _allclose_tree(guided(1.0), c, rtol=1e-6, atol=1e-6)


def test_drop_condition_mask():
  n = 100000
  mask = diffusion.drop_condition_mask(jax.random.key(0), n, 0.1)
  assert mask.shape == (n,) and mask.dtype == jnp.bool_
  assert abs(float(mask.mean()) - 0.1) < 4.5 * np.sqrt(0.1 * 0.9 / n)
  assert not np.any(diffusion.drop_condition_mask(jax.random.key(1), 1000, 0.0))
  assert np.all(diffusion.drop_condition_mask(jax.random.key(2), 1000, 1.0))
  other = diffusion.drop_condition_mask(jax.random.key(3), n, 0.1)
  assert np.any(other != mask)
