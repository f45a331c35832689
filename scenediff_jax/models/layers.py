"""Small building blocks shared by the models: MLPs, sine positional encoding, attention."""
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Every module takes `dtype`, the dtype its matrix products run in (training.compute_dtype);
# parameters stay float32 (flax's param_dtype) and norms compute their statistics in float32.


class MLP(nn.Module):
  """Dense layers with GELU between them (none after the last)."""
  features: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i, f in enumerate(self.features):
      x = nn.Dense(f, dtype=self.dtype)(x)
      if i < len(self.features) - 1:
        x = nn.gelu(x)
    return x


def sine_encoding(points, num_frequencies: int):
  """NeRF-style encoding [..., 3] → [..., 3 + 6·F]: x, sin(2^k π x), cos(2^k π x)."""
  scales = jnp.pi * 2.0 ** jnp.arange(num_frequencies, dtype=points.dtype)
  angles = points[..., None, :] * scales[:, None]
  return jnp.concatenate([points, jnp.sin(angles).reshape(*points.shape[:-1], -1),
                          jnp.cos(angles).reshape(*points.shape[:-1], -1)], -1)


class AttentionBlock(nn.Module):
  """Pre-norm (cross-)attention followed by an MLP, both residual."""
  num_heads: int
  mlp_ratio: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None):
    width = x.shape[-1]
    context = x if context is None else context
    norm = lambda: nn.LayerNorm(dtype=self.dtype)
    h = norm()(x)
    x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)(
        h, norm()(context))
    return x + MLP((width * self.mlp_ratio, width), self.dtype)(norm()(x))


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
  """Transformer/DDPM sinusoidal embedding of (diffusion) timesteps: [...] → [..., dim]."""
  half = dim // 2
  freqs = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  angles = jnp.asarray(t, jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


class TransformerLayer(nn.Module):
  """Pre-norm self-attention, then (if a context is given) cross-attention, then an MLP.

  All residual; `mask` (broadcastable to [..., heads, q, k]) applies to the self-attention.
  """
  num_heads: int
  mlp_ratio: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, mask=None):
    width = x.shape[-1]
    norm = lambda: nn.LayerNorm(dtype=self.dtype)
    attention = lambda: nn.MultiHeadDotProductAttention(num_heads=self.num_heads, dtype=self.dtype)
    h = norm()(x)
    x = x + attention()(h, h, mask=mask)
    if context is not None:
      x = x + attention()(norm()(x), norm()(context))
    return x + MLP((width * self.mlp_ratio, width), self.dtype)(norm()(x))
