"""The regression ablation (PAPER.md, Table 2's "regression instead of diffusion"): the same
denoiser, given one fixed input (x = 0, the mean of pure noise, at t = T − 1), predicts x₀
itself in one forward pass; training regresses x₀ instead of ε and sampling is that one pass.
"""
import jax
import jax.numpy as jnp


def regression_input(x0_like, num_timesteps):
  """(zeros shaped like x0_like, t = T − 1 per scene): the fixed input a regression model sees.
  `x0_like` is a dict of arrays or of jax.ShapeDtypeStructs whose leading dim is the batch."""
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), x0_like)
  batch_size = jax.tree.leaves(x0_like)[0].shape[0]
  return zeros, jnp.full((batch_size,), num_timesteps - 1, jnp.int32)


def is_regression(config) -> bool:
  """Whether a config trains the regression ablation (config.method) instead of diffusion."""
  method = config.get('method', 'diffusion')
  if method not in ('diffusion', 'regression'):
    raise ValueError(f"config.method must be 'diffusion' or 'regression', not {method!r}.")
  return method == 'regression'
