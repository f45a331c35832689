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
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from scenediff_jax.models import layer_stacks
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
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb):
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype)
    h = dense(self.width)(nn.gelu(norm()(x)))
    scale, shift = jnp.split(dense(2 * self.width)(nn.silu(temb))[:, None], 2, axis=-1)
    h = norm()(h) * (1.0 + scale) + shift
    h = dense(self.width)(nn.gelu(h))
    skip = x if x.shape[-1] == self.width else dense(self.width)(x)
    return skip + h


class PoseBlock(nn.Module):
  """One UNet block: time ResNet layer → cross-attention to own condition → ISA."""
  width: int
  num_heads: int
  head_dim: int
  use_isa: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, context, mask, skip=None):
    """x [B, E, W_in], temb [B, T], context [B, E, K, C], mask [B, E] → [B, E, width];
    a decoder block's `skip` (the encoder output of its level) is concatenated to x first."""
    if skip is not None:
      x = jnp.concatenate([x, skip], -1)
    x = TimeResBlock(self.width, self.dtype)(x, temb)
    attention = lambda: nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim, dtype=self.dtype)
    norm = functools.partial(nn.LayerNorm, dtype=self.dtype)
    # Each element is its own batch entry with one query: it sees only its own condition.
    h = norm()(x)[..., None, :]
    x = x + attention()(h, norm()(context))[..., 0, :]
    if self.use_isa:
      h = norm()(x)
      # Key mask only: padded queries still see the layout (always valid), so no empty rows.
      x = x + attention()(h, h, mask=mask[:, None, None, :])
    return x


class PoseUNet(nn.Module):
  """Set UNet over scene elements: encoder blocks, then mirrored decoder blocks whose input
  is the previous output concatenated with the encoder output of the same level.

  Consecutive blocks with the same input and output widths run scanned (layer_stacks): the
  paper's 8 + 8 blocks compile as 5 + 5. Blocks are numbered PoseBlock_0 … _{2L−1}, the
  encoder's first.
  """
  widths: Sequence[int]
  num_heads: int
  head_dim: int
  use_isa: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, temb, context, mask):
    widths, depth = list(self.widths), len(self.widths)
    fields = dict(num_heads=self.num_heads, head_dim=self.head_dim, use_isa=self.use_isa,
                  dtype=self.dtype)
    shared = (temb, context, mask)
    broadcast = (nn.broadcast,) * 3
    skips = []
    encoder = [(x.shape[-1] if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)]
    for start, stop in layer_stacks.runs(encoder):
      x, outputs = layer_stacks.run(PoseBlock, 'PoseBlock', start, stop - start, x, *shared,
                                    in_axes=broadcast, emit=True, width=widths[start], **fields)
      skips += list(outputs)
    skips.reverse()
    decoder = widths[::-1]
    signatures = [((decoder[j - 1] if j else widths[-1]) + w, w) for j, w in enumerate(decoder)]
    for start, stop in layer_stacks.runs(signatures):
      x, _ = layer_stacks.run(PoseBlock, 'PoseBlock', depth + start, stop - start, x, *shared,
                              jnp.stack(skips[start:stop]), in_axes=(*broadcast, 0),
                              width=decoder[start], **fields)
    return nn.LayerNorm(dtype=self.dtype)(x)


class PartDenoiser(nn.Module):
  """Transformer over the g part tokens of each object: `layers[0]` self-attention layers,
  then `layers[1]` layers that also cross-attend to `context`. Returns the token features."""
  layers: Sequence[int]
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, context):
    # Each group runs scanned (layer_stacks): TransformerLayer_0 … _{a−1} attend to the
    # tokens only, the next b also to the context.
    first, cross = self.layers
    if first:
      tokens, _ = layer_stacks.run(TransformerLayer, 'TransformerLayer', 0, first, tokens,
                                   num_heads=self.num_heads, dtype=self.dtype)
    if cross:
      tokens, _ = layer_stacks.run(TransformerLayer, 'TransformerLayer', first, cross, tokens,
                                   context, in_axes=(nn.broadcast,), num_heads=self.num_heads,
                                   dtype=self.dtype)
    return nn.LayerNorm(dtype=self.dtype)(tokens)


def _zero_dense(features, name):
  # ε̂ = 0 at initialisation: the first loss is the noise variance, not a random guess. The
  # outputs are float32 whatever the compute dtype: the losses are computed in float32.
  dense = nn.Dense(features, kernel_init=nn.initializers.zeros, name=name)
  return lambda x: dense(x.astype(jnp.float32))


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
  dtype: Any = jnp.float32  # of the matrix products (training.compute_dtype)

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
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    temb = MLP((time_width, time_width), self.dtype)(timestep_embedding(t, self.time_frequencies))

    # Element features. Objects also see their flattened noisy Gaussians, so the pose is
    # denoised knowing the shape it will carry.
    layout_x = dense(width0, name='layout_in')(layout)[:, None]
    shape_summary = gaussians.reshape(batch, num_objects, -1)
    objects_x = (dense(width0, name='pose_in')(pose) +
                 dense(width0, name='shape_summary_in')(shape_summary))
    x = jnp.concatenate([layout_x, objects_x], 1)
    element_mask = jnp.concatenate([jnp.ones((batch, 1), bool), mask], 1)

    # Condition tokens per element (the layout's first): CONDITION_TOKENS projections of its
    # y plus one time token.
    attention_width = self.num_heads * self.head_dim
    context = self._tokens(condition, attention_width, temb, 'pose_condition')

    features = PoseUNet(self.pose_widths, self.num_heads, self.head_dim, self.use_isa, self.dtype)(
        x, temb, context, element_mask)
    eps_layout = _zero_dense(POSE_SIZE, 'layout_out')(features[:, 0])
    eps_pose = _zero_dense(POSE_SIZE, 'pose_out')(features[:, 1:])

    # Shape stages. The object context: its condition tokens, its pose features, t.
    object_context = jnp.concatenate([
        self._tokens(condition[:, 1:], sw, temb, 'shape_condition'),
        dense(sw, name='pose_features')(features[:, 1:])[:, :, None]], 2)
    time_token = dense(sw, name='shape_time')(temb)[:, None, None]

    # (a) Gaussians. Parts get a learned per-index embedding: the autoencoder's
    # decomposition gives part k a consistent role.
    part_embedding = self.param('part_embedding', nn.initializers.normal(0.02), (num_parts, sw))
    tokens = dense(sw, name='gaussians_in')(gaussians) + part_embedding + time_token
    gaussian_features = PartDenoiser(self.gaussian_layers, self.shape_heads, self.dtype,
                                     name='gaussian_stage')(
        tokens, object_context)
    eps_gaussians = _zero_dense(gaussians.shape[-1], 'gaussians_out')(gaussian_features)

    # (b) Intrinsics, conditioned on the Gaussian stage's token of the same part and on all.
    tokens = (dense(sw, name='intrinsics_in')(intrinsics) +
              dense(sw, name='gaussian_features_in')(gaussian_features) + time_token)
    intrinsic_stage = PartDenoiser(self.intrinsic_layers, self.shape_heads, self.dtype,
                                   name='intrinsic_stage')
    intrinsic_features = intrinsic_stage(
        tokens, jnp.concatenate([gaussian_features, object_context], 2))
    eps_intrinsics = _zero_dense(intrinsics.shape[-1], 'intrinsics_out')(intrinsic_features)

    return {'layout': eps_layout,
            'pose': eps_pose * objects_mask[..., None],
            'gaussians': eps_gaussians * objects_mask[..., None, None],
            'intrinsics': eps_intrinsics * objects_mask[..., None, None]}

  def _tokens(self, y, width, temb, name):
    """y [B, E, C] → [B, E, CONDITION_TOKENS + 1, width]: y's tokens and a time token."""
    tokens = nn.Dense(CONDITION_TOKENS * width, dtype=self.dtype, name=f'{name}_tokens')(y)
    tokens = tokens.reshape(*y.shape[:-1], CONDITION_TOKENS, width)
    time = nn.Dense(width, dtype=self.dtype, name=f'{name}_time')(temb)[:, None, None]
    return jnp.concatenate([tokens, jnp.broadcast_to(time, (*y.shape[:-1], 1, width))], 2)
