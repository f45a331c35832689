"""The shape autoencoder: surface points → code z → g Gaussians + g intrinsics → occupancy.

SPAGHETTI-style part decomposition (PAPER.md, "Representation"), trained as an autoencoder
so unseen shapes get codes in one forward pass. The factorisation (Gaussians [g, 16] in the
layout of geometry/gmm.py, intrinsics [g, d]) is the space the scene denoiser diffuses in:
`encode` goes into it, `occupancy` comes out of it.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from scenediff_jax.geometry import gmm
from scenediff_jax.models.layers import MLP, AttentionBlock, sine_encoding


class PointEncoder(nn.Module):
  """Permutation-invariant PointNet with a second, context-aware stage: [B, P, 3] → [B, C]."""
  width: int
  code_size: int

  @nn.compact
  def __call__(self, points):
    x = MLP((self.width, self.width))(sine_encoding(points, 4))
    pooled = jnp.max(x, axis=-2, keepdims=True)
    x = MLP((self.width, self.width))(jnp.concatenate([x, jnp.broadcast_to(pooled, x.shape)], -1))
    return nn.Dense(self.code_size)(jnp.max(x, axis=-2))


class Decomposition(nn.Module):
  """Code z [B, C] → Gaussians [B, g, 16] (valid, projected) and intrinsics [B, g, d]."""
  num_parts: int
  intrinsic_size: int
  width: int

  @nn.compact
  def __call__(self, z):
    parts = nn.Dense(self.num_parts * self.width)(z)
    parts = parts.reshape(*z.shape[:-1], self.num_parts, self.width)
    parts = MLP((self.width, gmm.GAUSSIAN_SIZE + self.intrinsic_size))(nn.gelu(parts))
    raw, intrinsics = parts[..., :gmm.GAUSSIAN_SIZE], parts[..., gmm.GAUSSIAN_SIZE:]
    # Offsets so that a fresh network starts from sensible parts: identity bases, small
    # variances, means spread by the network itself.
    identity = jnp.eye(3, dtype=raw.dtype).reshape(9)
    mean = 0.5 * jnp.tanh(raw[..., 0:3])  # inside the unit box
    basis = raw[..., 3:12] + identity
    variances = 0.01 * nn.softplus(raw[..., 12:15] + 1.0)
    gaussians = gmm.join(mean, basis.reshape(*basis.shape[:-1], 3, 3), variances, raw[..., 15])
    return gmm.project(gaussians), intrinsics


class OccupancyDecoder(nn.Module):
  """Occupancy logits [B, Q] of queries [B, Q, 3] given the parts of each shape.

  Part tokens embed each Gaussian (mean, basis, variances, weight) and its intrinsic vector;
  queries (sine positional encoding) cross-attend to them. With `part_distances`, a query
  also carries log(1 + squared Mahalanobis distance) to each Gaussian, in slot order: where
  it lies among the parts, which the attention would otherwise have to work out.
  """
  width: int
  num_heads: int
  depth: int
  num_frequencies: int = 6
  part_distances: bool = False

  @nn.compact
  def __call__(self, gaussians, intrinsics, queries):
    tokens = nn.Dense(self.width)(gaussians) + nn.Dense(self.width)(intrinsics)
    tokens = AttentionBlock(self.num_heads)(tokens)  # parts see each other
    features = sine_encoding(queries, self.num_frequencies)
    if self.part_distances:
      distances = jnp.log1p(jnp.swapaxes(gmm.mahalanobis_sq(queries, gaussians), -1, -2))
      features = jnp.concatenate([features, distances], -1)
    x = nn.Dense(self.width)(features)
    for _ in range(self.depth):
      x = AttentionBlock(self.num_heads)(x, tokens)
    return nn.Dense(1)(nn.LayerNorm()(x))[..., 0]


class ShapeAutoencoder(nn.Module):
  code_size: int = 256
  num_parts: int = 16
  intrinsic_size: int = 512
  width: int = 256
  num_heads: int = 4
  decoder_depth: int = 2
  decoder_frequencies: int = 6
  part_distances: bool = False

  def setup(self):
    self.encoder = PointEncoder(self.width, self.code_size)
    self.decomposition = Decomposition(self.num_parts, self.intrinsic_size, self.width)
    self.decoder = OccupancyDecoder(self.width, self.num_heads, self.decoder_depth,
                                    self.decoder_frequencies, self.part_distances)

  def encode(self, surface_points):
    """Surface points [B, P, 3] → (Gaussians [B, g, 16], intrinsics [B, g, d])."""
    return self.decomposition(self.encoder(surface_points))

  def occupancy(self, gaussians, intrinsics, queries):
    return self.decoder(gaussians, intrinsics, queries)

  def __call__(self, surface_points, queries):
    gaussians, intrinsics = self.encode(surface_points)
    return self.occupancy(gaussians, intrinsics, queries), gaussians, intrinsics


def make_model(config) -> ShapeAutoencoder:
  return ShapeAutoencoder(**config.shape_model)


def abstract_params(config):
  """Shapes and dtypes of the autoencoder's parameters (nothing is initialised)."""
  points = jax.ShapeDtypeStruct((1, config.shape_training.surface_points, 3), jnp.float32)
  return jax.eval_shape(make_model(config).init, jax.random.key(0), points, points)
