"""Classifier-free guidance: mixing conditional and unconditional ε, and condition dropout.

Training replaces a random share of the scenes' conditions by a learned null condition
(`drop_condition_mask`), so one network gives both ε_c = ε(x_t, t, y) and ε_u = ε(x_t, t, ∅);
sampling then follows ε = ε_u + s (ε_c − ε_u) (Ho & Salimans 2022). s = 1 is plain
conditional sampling and costs a single network call. The same mix of x₀ or v predictions is
the same guided sampler: at one (x_t, t) each is an affine function of ε with the same
coefficients for both calls.
"""
import jax


def guided_denoise_fn(conditional_fn, unconditional_fn, scale):
  """A denoise_fn(x_t, t) -> output mixing two of them, leaf by leaf, with guidance `scale`.

  With a python scale of 1 (or 0) only the conditional (or unconditional) function is
  returned, so turning guidance off adds no compute. A traced scale (an exported sampler
  takes it at run time) skips the unconditional call through `lax.cond` when it is 1.
  """
  if isinstance(scale, (int, float)):
    if scale == 1:
      return conditional_fn
    if scale == 0:
      return unconditional_fn

  def mix(eps_c, x_t, t):
    eps_u = unconditional_fn(x_t, t)
    return jax.tree.map(lambda c, u: u + scale * (c - u), eps_c, eps_u)

  def denoise_fn(x_t, t):
    eps_c = conditional_fn(x_t, t)
    if isinstance(scale, (int, float)):
      return mix(eps_c, x_t, t)
    return jax.lax.cond(scale == 1, lambda: eps_c, lambda: mix(eps_c, x_t, t))

  return denoise_fn


def drop_condition_mask(key, batch_size, drop_probability):
  """bool [batch_size]: True where a training scene's condition becomes the null condition.

  Each scene independently with probability drop_probability (0 → none, 1 → all).
  """
  return jax.random.bernoulli(key, drop_probability, (batch_size,))
