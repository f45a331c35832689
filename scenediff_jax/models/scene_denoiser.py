"""The scene denoiser: predicts the noise ε of the layout, every object pose and shape jointly.

PAPER.md, "Denoisers". Scene elements are the layout (element 0) and the N objects. A 1-D
UNet over the elements (kernel-1 convolutions, i.e. Dense per element) denoises the 7-d
poses; elements exchange information only through Intra-Scene Attention (ISA), masked so
padding is never a key. Per object, two SALAD-style transformers then denoise the g
Gaussians and the g intrinsic vectors, conditioned on the object's condition y_i, its pose
features and t. Nothing is indexed by object position, so permuting objects permutes ε̂.

Sizes (`config.denoiser`):
  paper:    SceneDenoiser()  # widths (256, 256, 512, 512, 512, 512, 1024, 1024), 8 × 64 heads
  tiny CPU: SceneDenoiser(pose_widths=(16, 16, 32), num_heads=2, head_dim=8, shape_width=16,
                          shape_heads=2, gaussian_layers=(1, 1), intrinsic_layers=(1, 1),
                          time_frequencies=16)
"""
from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from scenediff_jax.models.layers import MLP, TransformerLayer, timestep_embedding

# y_i is split into this many tokens so cross-attention has something to choose between
# (one key would make the softmax constant and the attention a plain Dense).
CONDITION_TOKENS = 4
POSE_SIZE = 7


class TimeResBlock(nn.Module):
  """ResNet layer on each element's channels, FiLM-modulated by the time embedding.

  LayerNorm runs over the channels of one element only: normalising across elements would
  let padding leak into real elements.
  """
  width: int

  @nn.compact
  def __call__(self, x, temb):
    h = nn.Dense(self.width)(nn.gelu(nn.LayerNorm()(x)))
    scale, shift = jnp.split(nn.Dense(2 * self.width)(nn.silu(temb))[:, None], 2, axis=-1)
    h = nn.LayerNorm()(h) * (1.0 + scale) + shift
    h = nn.Dense(self.width)(nn.gelu(h))
    skip = x if x.shape[-1] == self.width else nn.Dense(self.width)(x)
    return skip + h


class PoseBlock(nn.Module):
  """One UNet block: time ResNet layer → cross-attention to own condition → ISA."""
  width: int
  num_heads: int
  head_dim: int
  use_isa: bool

  @nn.compact
  def __call__(self, x, temb, context, mask):
    """x [B, E, W_in], temb [B, T], context [B, E, K, C], mask [B, E] → [B, E, width]."""
    x = TimeResBlock(self.width)(x, temb)
    attention = lambda: nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim)
    # Each element is its own batch entry with one query: it sees only its own condition.
    h = nn.LayerNorm()(x)[..., None, :]
    x = x + attention()(h, nn.LayerNorm()(context))[..., 0, :]
    if self.use_isa:
      h = nn.LayerNorm()(x)
      # Key mask only: padded queries still see the layout (always valid), so no empty rows.
      x = x + attention()(h, h, mask=mask[:, None, None, :])
    return x


class PoseUNet(nn.Module):
  """Set UNet over scene elements: encoder blocks, then mirrored decoder blocks whose input
  is the previous output concatenated with the encoder output of the same level."""
  widths: Sequence[int]
  num_heads: int
  head_dim: int
  use_isa: bool

  @nn.compact
  def __call__(self, x, temb, context, mask):
    block = lambda w: PoseBlock(w, self.num_heads, self.head_dim, self.use_isa)
    skips = []
    for w in self.widths:
      x = block(w)(x, temb, context, mask)
      skips.append(x)
    for w, skip in zip(reversed(self.widths), reversed(skips)):
      x = block(w)(jnp.concatenate([x, skip], -1), temb, context, mask)
    return nn.LayerNorm()(x)


class PartDenoiser(nn.Module):
  """Transformer over the g part tokens of each object: `layers[0]` self-attention layers,
  then `layers[1]` layers that also cross-attend to `context`. Returns the token features."""
  layers: Sequence[int]
  num_heads: int

  @nn.compact
  def __call__(self, tokens, context):
    for _ in range(self.layers[0]):
      tokens = TransformerLayer(self.num_heads)(tokens)
    for _ in range(self.layers[1]):
      tokens = TransformerLayer(self.num_heads)(tokens, context)
    return nn.LayerNorm()(tokens)


def _zero_dense(features, name):
  # ε̂ = 0 at initialisation: the first loss is the noise variance, not a random guess.
  return nn.Dense(features, kernel_init=nn.initializers.zeros, name=name)


class SceneDenoiser(nn.Module):
  """(noisy dict, t [B], condition [B, 1 + N, C], mask [B, N]) → ε̂ dict of the same shapes.

  noisy: layout [B, 7], pose [B, N, 7], gaussians [B, N, g, 16], intrinsics [B, N, g, d].
  Outputs of padded objects are 0.
  """
  pose_widths: Sequence[int] = (256, 256, 512, 512, 512, 512, 1024, 1024)
  num_heads: int = 8
  head_dim: int = 64
  use_isa: bool = True
  shape_width: int = 256
  shape_heads: int = 4
  gaussian_layers: Sequence[int] = (2, 6)
  intrinsic_layers: Sequence[int] = (6, 6)
  time_frequencies: int = 128

  @nn.compact
  def __call__(self, noisy, t, condition, mask):
    layout, pose = noisy['layout'], noisy['pose']
    gaussians, intrinsics = noisy['gaussians'], noisy['intrinsics']
    batch, num_objects, num_parts = gaussians.shape[:3]
    width0, sw = self.pose_widths[0], self.shape_width
    mask = mask.astype(bool)
    objects_mask = mask.astype(layout.dtype)

    # Time: sinusoid → MLP, shared by every block (each block has its own scale/shift).
    time_width = 4 * width0
    temb = MLP((time_width, time_width))(timestep_embedding(t, self.time_frequencies))

    # Element features. Objects also see their flattened noisy Gaussians, so the pose is
    # denoised knowing the shape it will carry.
    layout_x = nn.Dense(width0, name='layout_in')(layout)[:, None]
    shape_summary = gaussians.reshape(batch, num_objects, -1)
    objects_x = (nn.Dense(width0, name='pose_in')(pose) +
                 nn.Dense(width0, name='shape_summary_in')(shape_summary))
    x = jnp.concatenate([layout_x, objects_x], 1)
    element_mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], 1)

    # Condition tokens per element (the layout's first): CONDITION_TOKENS projections of its
    # y plus one time token.
    attention_width = self.num_heads * self.head_dim
    context = self._tokens(condition, attention_width, temb, 'pose_condition')

    features = PoseUNet(self.pose_widths, self.num_heads, self.head_dim, self.use_isa)(
        x, temb, context, element_mask)
    eps_layout = _zero_dense(POSE_SIZE, 'layout_out')(features[:, 0])
    eps_pose = _zero_dense(POSE_SIZE, 'pose_out')(features[:, 1:])

    # Shape stages. The object context: its condition tokens, its pose features, t.
    object_context = jnp.concatenate([
        self._tokens(condition[:, 1:], sw, temb, 'shape_condition'),
        nn.Dense(sw, name='pose_features')(features[:, 1:])[:, :, None]], 2)
    time_token = nn.Dense(sw, name='shape_time')(temb)[:, None, None]

    # (a) Gaussians. Parts get a learned per-index embedding: the autoencoder's
    # decomposition gives part k a consistent role.
    part_embedding = self.param('part_embedding', nn.initializers.normal(0.02), (num_parts, sw))
    tokens = nn.Dense(sw, name='gaussians_in')(gaussians) + part_embedding + time_token
    gaussian_features = PartDenoiser(self.gaussian_layers, self.shape_heads, name='gaussian_stage')(
        tokens, object_context)
    eps_gaussians = _zero_dense(gaussians.shape[-1], 'gaussians_out')(gaussian_features)

    # (b) Intrinsics, conditioned on the Gaussian stage's token of the same part and on all.
    tokens = (nn.Dense(sw, name='intrinsics_in')(intrinsics) +
              nn.Dense(sw, name='gaussian_features_in')(gaussian_features) + time_token)
    intrinsic_stage = PartDenoiser(self.intrinsic_layers, self.shape_heads, name='intrinsic_stage')
    intrinsic_features = intrinsic_stage(
        tokens, jnp.concatenate([gaussian_features, object_context], 2))
    eps_intrinsics = _zero_dense(intrinsics.shape[-1], 'intrinsics_out')(intrinsic_features)

    return {'layout': eps_layout,
            'pose': eps_pose * objects_mask[..., None],
            'gaussians': eps_gaussians * objects_mask[..., None, None],
            'intrinsics': eps_intrinsics * objects_mask[..., None, None]}

  def _tokens(self, y, width, temb, name):
    """y [B, E, C] → [B, E, CONDITION_TOKENS + 1, width]: y's tokens and a time token."""
    tokens = nn.Dense(CONDITION_TOKENS * width, name=f'{name}_tokens')(y)
    tokens = tokens.reshape(*y.shape[:-1], CONDITION_TOKENS, width)
    time = nn.Dense(width, name=f'{name}_time')(temb)[:, None, None]
    return jnp.concatenate([tokens, jnp.broadcast_to(time, (*y.shape[:-1], 1, width))], 2)
