"""Samplers of the reverse process: DDPM ancestral sampling and DDIM, over pytree states.

`denoise_fn(x_t, t) -> output` is the model as a closure: x_t a pytree whose leaves have the
batch B as leading dimension, t int32 [B], output a pytree like x_t holding what the model
predicts (`prediction`: 'eps', the default, 'x0' or 'v'; diffusion/parametrization.py). A
`template` is a pytree of arrays or jax.ShapeDtypeStructs giving the shapes and dtypes of the
state.

Randomness follows one scheme in both samplers, so that DDIM with every timestep and η = 1
reproduces DDPM draw for draw: the key is split into (initial noise, steps), the step key
into one key per step (in sampling order), and each step draws its noise with `tree_normal`.
Everything is jit-able and deterministic for a given key; the step loops are `lax.scan`s.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax.diffusion.parametrization import x0_and_eps


def tree_normal(key, template):
  """Standard normal noise shaped like template (leaves float, drawn in flatten order).

  One draw for the whole tree, cut into leaves: a single random-bits kernel per sampler
  step compiles much faster than one per leaf.
  """
  leaves, treedef = jax.tree.flatten(template)
  sizes = [math.prod(l.shape) for l in leaves]
  flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
  parts = jnp.split(flat, np.cumsum(sizes)[:-1]) if len(leaves) > 1 else [flat]
  return jax.tree.unflatten(treedef, [p.reshape(l.shape).astype(l.dtype)
                                      for p, l in zip(parts, leaves)])


def _batch_size(tree):
  return jax.tree.leaves(tree)[0].shape[0]


def _batched_t(t, tree):
  return jnp.broadcast_to(jnp.asarray(t, jnp.int32), (_batch_size(tree),))


def _per_leaf(v, x):
  """A per-timestep value (shaped like t: [B] or scalar) broadcast against leaf x [B, ...]."""
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim)).astype(x.dtype)


def _clip(schedule, x_t, t, x0, eps, clip_x0):
  """Clips x̂0 to [−c, c] and re-derives ε̂ from it, so the update stays consistent."""
  if clip_x0 is None:
    return x0, eps
  x0 = jax.tree.map(lambda z: jnp.clip(z, -clip_x0, clip_x0), x0)
  return x0, schedule.predict_eps(x_t, t, x0)


def ddpm_step(denoise_fn, schedule, x_t, t, key, clip_x0=None, prediction='eps'):
  """One ancestral step x_t → x_{t−1} ~ N(μ̃_t(x̂0, x_t), β̃_t I); t a scalar (or [B]).

  No noise is added at t = 0 (β̃_0 = 0, and masked besides), so the last step returns x̂0.
  """
  t = jnp.asarray(t, jnp.int32)
  x0, eps = x0_and_eps(schedule, prediction, x_t, t, denoise_fn(x_t, _batched_t(t, x_t)))
  x0, _ = _clip(schedule, x_t, t, x0, eps, clip_x0)
  mean = schedule.posterior_mean(x0, x_t, t)
  std = jnp.where(t > 0, jnp.sqrt(schedule.posterior_variance(t)), 0.0)
  return jax.tree.map(lambda m, z: m + _per_leaf(std, m) * z, mean, tree_normal(key, x_t))


def ddpm_sample(denoise_fn, schedule, key, template, clip_x0=None, prediction='eps'):
  """Ancestral sampling over all T steps, from x_{T−1} ~ N(0, I) down to x̂0."""
  init_key, steps_key = jax.random.split(key)
  x = tree_normal(init_key, template)
  ts = jnp.arange(schedule.num_timesteps - 1, -1, -1, dtype=jnp.int32)
  keys = jax.random.split(steps_key, schedule.num_timesteps)

  def body(x, step):
    t, k = step
    return ddpm_step(denoise_fn, schedule, x, t, k, clip_x0, prediction), None

  return jax.lax.scan(body, x, (ts, keys))[0]


def ddim_timesteps(num_timesteps, num_steps):
  """The DDIM steps, descending int32 [num_steps], evenly spaced from T − 1 down to 0.

  Starting at T − 1 makes the first step start from the noise level x_T ~ N(0, I) is drawn
  at; ending at 0 makes the last step the one whose x̂0 is returned. num_steps == T gives
  every timestep; one step goes straight from T − 1 to x̂0.
  """
  if not 1 <= num_steps <= num_timesteps:
    raise ValueError(f'num_steps must be in [1, {num_timesteps}], got {num_steps}')
  # Spacing (T − 1)/(S − 1) ≥ 1, so the rounded steps are distinct.
  return np.round(np.linspace(num_timesteps - 1, 0, num_steps)).astype(np.int32)


def ddim_step(denoise_fn, schedule, x_t, t, t_prev, key, eta=0.0, clip_x0=None,
              prediction='eps'):
  """One DDIM step x_t → x_{t_prev} (Song et al. 2021, eq. 12); t_prev = −1 means x0.

  x_prev = √ᾱ_prev x̂0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z, with
  σ = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev): η = 0 is deterministic, η = 1 with
  t_prev = t − 1 is DDPM's ancestral step (σ² = β̃_t). t and t_prev: scalars (or [B]).
  """
  t = jnp.asarray(t, jnp.int32)
  t_prev = jnp.asarray(t_prev, jnp.int32)
  # Through log ᾱ and expm1: 1 − ᾱ and 1 − ᾱ_t/ᾱ_prev keep their precision near t = 0.
  log_a = schedule.log_alphas_cumprod[t]
  log_a_prev = jnp.where(t_prev >= 0, schedule.log_alphas_cumprod[jnp.maximum(t_prev, 0)], 0.0)
  one_minus_prev = -jnp.expm1(log_a_prev)
  var = eta ** 2 * one_minus_prev / -jnp.expm1(log_a) * -jnp.expm1(log_a - log_a_prev)
  x0_coef = jnp.exp(0.5 * log_a_prev)
  eps_coef = jnp.sqrt(jnp.maximum(one_minus_prev - var, 0.0))

  x0, eps = x0_and_eps(schedule, prediction, x_t, t, denoise_fn(x_t, _batched_t(t, x_t)))
  x0, eps = _clip(schedule, x_t, t, x0, eps, clip_x0)
  x_prev = jax.tree.map(lambda z, e: _per_leaf(x0_coef, z) * z + _per_leaf(eps_coef, e) * e,
                        x0, eps)
  if isinstance(eta, (int, float)) and eta == 0:
    return x_prev  # deterministic: no noise to draw
  std = jnp.sqrt(var)
  return jax.tree.map(lambda m, z: m + _per_leaf(std, m) * z, x_prev, tree_normal(key, x_t))


def ddim_sample(denoise_fn, schedule, key, template, num_steps=100, eta=0.0, clip_x0=None,
                prediction='eps'):
  """DDIM sampling over `ddim_timesteps(T, num_steps)` (num_steps static), from N(0, I)."""
  return ddim_sample_over(denoise_fn, schedule, key, template,
                          jnp.asarray(ddim_timesteps(schedule.num_timesteps, num_steps)),
                          eta, clip_x0, prediction)


def ddim_sample_over(denoise_fn, schedule, key, template, timesteps, eta=0.0, clip_x0=None,
                     prediction='eps'):
  """DDIM sampling over given descending `timesteps` int32 [S] (e.g. `ddim_timesteps`).

  The steps are an input rather than a constant, so one compiled (or exported) sampler
  serves every step count; S may be a symbolic dimension under jax.export.
  """
  timesteps = jnp.asarray(timesteps, jnp.int32)
  prev = jnp.concatenate([timesteps[1:], jnp.full((1,), -1, jnp.int32)])
  init_key, steps_key = jax.random.split(key)
  x = tree_normal(init_key, template)
  keys = jax.random.split(steps_key, timesteps.shape[0])

  def body(x, step):
    t, t_prev, k = step
    return ddim_step(denoise_fn, schedule, x, t, t_prev, k, eta, clip_x0, prediction), None

  return jax.lax.scan(body, x, (timesteps, prev, keys))[0]
