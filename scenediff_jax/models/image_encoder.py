"""The image encoder: image + camera + 2D boxes + classes → the condition of every scene element.

PAPER.md, "Conditioning": image features inside each 2D box, ROI-aligned to S×S and passed
through a small CNN to a vector; a sinusoidal encoding of the box corners; the class
one-hot. Their concatenation, projected by one Dense layer, is y_i. A learned null
condition stands in for y when the image is dropped (classifier-free guidance).

The paper is silent on the layout's condition. Decision: the room box is conditioned on the
whole image, ROI-aligned like an object spanning the frame through its own CNN, and on the
camera (intrinsics relative to the image size, and the pitch/roll rotation), because the
room box lives in the gravity-aligned frame while the image is seen through the tilted
camera. With `layout_from_image=False` it gets a learned token instead (no image evidence
beyond what attention to the objects brings); on SynthRooms that loses to the mean room box.

The backbone is a ResNet with GroupNorm instead of BatchNorm, so `apply` is a pure function
of params and inputs (no batch statistics to carry or to sync across devices). With
`norm='frozen_batch'` it is torchvision's ResNet instead, BatchNorm statistics folded into a
per-channel scale and bias and ImageNet pixel statistics, so that ImageNet weights converted
by models/resnet_weights.py fit it.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.models.layers import sine_encoding

# torch-style initialisation of ResNet convolutions.
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def num_groups(channels: int, max_groups: int = 32) -> int:
  """The largest group count ≤ max_groups that divides `channels`."""
  groups = min(max_groups, channels)
  while channels % groups:
    groups -= 1
  return groups


# Pixel statistics the backbone normalises its input with: ours, and torchvision's ImageNet.
CENTERED_PIXELS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
IMAGENET_PIXELS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class FrozenBatchNorm(nn.Module):
  """BatchNorm in inference form: y = x·scale + bias per channel, the running statistics
  folded into scale and bias (models/resnet_weights.py). Pure: nothing to update."""
  scale_init: nn.initializers.Initializer = nn.initializers.ones
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', self.scale_init, (x.shape[-1],))
    bias = self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return (x * scale + bias).astype(self.dtype)


def _norm(channels: int, kind: str = 'group', **kwargs):
  if kind == 'frozen_batch':
    return FrozenBatchNorm(**kwargs)
  if kind != 'group':
    raise ValueError(f"norm must be 'group' or 'frozen_batch', got {kind!r}")
  return nn.GroupNorm(num_groups=num_groups(channels), **kwargs)


def _conv(features: int, kernel: int, strides: int = 1, dtype=jnp.float32):
  # Explicit torch-style padding: output size ceil(H / stride) and a fixed alignment
  # (padding='SAME' pads asymmetrically for stride 2).
  pad = (kernel - 1) // 2
  return nn.Conv(features, (kernel, kernel), strides=strides, padding=((pad, pad), (pad, pad)),
                 use_bias=False, kernel_init=_CONV_INIT, dtype=dtype)


class BasicBlock(nn.Module):
  """Two 3×3 convs (ResNet-18/34). Output channels = width."""
  width: int
  strides: int = 1
  norm: str = 'group'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    norm = functools.partial(_norm, kind=self.norm, dtype=self.dtype)
    conv = functools.partial(_conv, dtype=self.dtype)
    y = nn.relu(norm(self.width)(conv(self.width, 3, self.strides)(x)))
    # Zero-initialised last scale: every block starts as the identity (Goyal et al. 2017).
    y = norm(self.width, scale_init=nn.initializers.zeros)(conv(self.width, 3)(y))
    if self.strides != 1 or x.shape[-1] != self.width:
      x = norm(self.width)(conv(self.width, 1, self.strides)(x))
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  """1×1 → 3×3 (strided, as in ResNet v1.5) → 1×1 (ResNet-50). Output channels = 4·width."""
  width: int
  strides: int = 1
  norm: str = 'group'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out = 4 * self.width
    norm = functools.partial(_norm, kind=self.norm, dtype=self.dtype)
    conv = functools.partial(_conv, dtype=self.dtype)
    y = nn.relu(norm(self.width)(conv(self.width, 1)(x)))
    y = nn.relu(norm(self.width)(conv(self.width, 3, self.strides)(y)))
    y = norm(out, scale_init=nn.initializers.zeros)(conv(out, 1)(y))
    if self.strides != 1 or x.shape[-1] != out:
      x = norm(out)(conv(out, 1, self.strides)(x))
    return nn.relu(x + y)


RESNET_BLOCKS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (BottleneckBlock, (3, 4, 6, 3)),
}


def feature_stride(num_stages: int) -> int:
  """Pixels per feature cell of a ResNet cut after `num_stages` stages (stem: 4, then ×2)."""
  return 4 * 2 ** (num_stages - 1)


class ResNet(nn.Module):
  """ResNet trunk: uint8 images [B, H, W, 3] → features [B, ⌈H/s⌉, ⌈W/s⌉, C].

  s = feature_stride(num_stages); C = base_width·2^(num_stages−1) (×4 for depth 50).
  norm: 'group' (GroupNorm) or 'frozen_batch' (torchvision's layout and pixel statistics).
  """
  depth: int = 18
  base_width: int = 64
  num_stages: int = 4
  norm: str = 'group'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, image):
    if self.depth not in RESNET_BLOCKS:
      raise ValueError(f'resnet_depth must be one of {sorted(RESNET_BLOCKS)}, got {self.depth}')
    if not 1 <= self.num_stages <= 4:
      raise ValueError(f'num_stages must be in 1..4, got {self.num_stages}')
    block, counts = RESNET_BLOCKS[self.depth]
    mean, std = IMAGENET_PIXELS if self.norm == 'frozen_batch' else CENTERED_PIXELS
    x = (image.astype(jnp.float32) / 255.0 - jnp.array(mean)) / jnp.array(std)
    x = nn.relu(_norm(self.base_width, self.norm, dtype=self.dtype)(
        _conv(self.base_width, 7, 2, self.dtype)(x)))
    x = max_pool_3x3_stride_2(x)
    # Not scanned (layer_stacks): on a CPU, XLA runs convolutions inside a loop 3× slower
    # (BENCHMARKS.md, "Compilation").
    for stage in range(self.num_stages):
      for i in range(counts[stage]):
        x = block(self.base_width * 2 ** stage, strides=2 if stage > 0 and i == 0 else 1,
                  norm=self.norm, dtype=self.dtype)(x)
    return x


def max_pool_3x3_stride_2(x):
  """nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))) on [B, H, W, C], as
  the maximum of nine strided views. Same values; the gradient is a sum of nine strided
  scatters instead of XLA's select-and-scatter, which on a CPU materialised four index
  arrays of the padded input and took a fifth of the image encoder's backward pass."""
  height, width = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  view = lambda dy, dx: padded[:, dy:dy + height:2, dx:dx + width:2]
  return functools.reduce(jnp.maximum, [view(dy, dx) for dy in range(3) for dx in range(3)])


def _bin_weights(lo, hi, size, output_size, sampling_ratio, stride):
  """Interpolation weights [N, output_size, size] along one axis, averaged over each bin's
  samples. lo, hi [N]: the box's continuous extent in pixels."""
  bin_size = (hi - lo) / output_size
  # Sub-bin centres, as fractions of a bin: (k + 0.5) / r.
  offsets = (jnp.arange(output_size)[:, None] +
             (jnp.arange(sampling_ratio)[None, :] + 0.5) / sampling_ratio)
  pixels = lo[:, None, None] + offsets[None] * bin_size[:, None, None]  # [N, S, r]
  # Pixel coordinate → feature-grid coordinate (cell j's centre is at j·s + (s−1)/2),
  # clamped to the border: edge replication.
  grid = jnp.clip((pixels - (stride - 1) / 2) / stride, 0.0, size - 1)
  # The hat function max(0, 1 − |g − h|) is exactly the bilinear weight of cell h.
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(grid[..., None] - jnp.arange(size)))
  return weights.mean(axis=2)


def roi_align(features, boxes, output_size: int, stride: int, sampling_ratio: int = 2):
  """ROI-align: features [Hf, Wf, C] and boxes [N, 4] → [N, output_size, output_size, C].

  Conventions:
  - Boxes are (x1, y1, x2, y2) in image pixels; pixel centres sit at integer coordinates
    (OpenCV) and a box passes through the centres of its extreme pixels, so its continuous
    extent is [x1 − 0.5, x2 + 0.5] × [y1 − 0.5, y2 + 0.5].
  - Feature cell (i, j) covers pixels [j·s, (j+1)·s) × [i·s, (i+1)·s) (s = stride), so its
    centre is at pixel (j·s + (s−1)/2, i·s + (s−1)/2).
  - The extent is split into output_size² bins; each bin averages sampling_ratio² bilinear
    samples at its sub-bin centres. Samples outside the map are clamped to its border.
  Bilinear sampling on a product grid is separable, and so is the mean over a bin's samples,
  so the whole operation is two small weight matrices and one einsum (no gathers).
  Degenerate boxes (e.g. all-zero padding) give finite values.
  """
  boxes = boxes.astype(jnp.float32)
  height, width = features.shape[:2]
  x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
  wy = _bin_weights(y1 - 0.5, y2 + 0.5, height, output_size, sampling_ratio, stride)
  wx = _bin_weights(x1 - 0.5, x2 + 0.5, width, output_size, sampling_ratio, stride)
  # Highest precision: this is interpolation, not a learned layer (GPU/TPU default to bf16).
  return jnp.einsum('nyh,hwc,nxw->nyxc', wy.astype(features.dtype), features,
                    wx.astype(features.dtype), precision=jax.lax.Precision.HIGHEST)


def camera_encoding(K, world_to_cam, image_size):
  """K [..., 3, 3], world_to_cam [..., 3, 3] → [..., 13]: fx, fy, cx, cy over the image
  width/height (resolution-free), then the 9 rotation entries (pitch and roll)."""
  height, width = image_size
  scale = jnp.array([width, height, width, height], jnp.float32)
  intrinsics = jnp.stack([K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]], -1) / scale
  return jnp.concatenate([intrinsics, world_to_cam.reshape(*world_to_cam.shape[:-2], 9)], -1)


def box_encoding(bbox2d, image_size, num_frequencies: int):
  """Sinusoidal encoding of box corners [..., 4] → [..., 4 + 8·F].

  Corners are normalised by image_size = (H, W) (x by width, y by height) to [0, 1]; the
  output is [x1, y1, x2, y2], then sin(2^k π ·) of the four for k = 0..F−1, then cos.
  """
  height, width = image_size
  scale = jnp.array([width, height, width, height], jnp.float32)
  return sine_encoding(bbox2d.astype(jnp.float32) / scale, num_frequencies)


class RoiHead(nn.Module):
  """ROI features [..., S, S, C] → one vector per object [..., width]:
  3 × (3×3 conv + GroupNorm + LeakyReLU(0.2)), flatten (keeps the layout), Dense."""
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    lead = x.shape[:-3]
    x = x.reshape(-1, *x.shape[-3:])  # GroupNorm normalises each object on its own
    for _ in range(3):
      x = nn.Conv(self.width, (3, 3), dtype=self.dtype)(x)
      x = nn.leaky_relu(_norm(self.width, dtype=self.dtype)(x), 0.2)
    return nn.Dense(self.width, dtype=self.dtype)(x.reshape(*lead, -1))


class ImageEncoder(nn.Module):
  """(image uint8 [B, H, W, 3], K [B, 3, 3], world_to_cam [B, 3, 3], bbox2d [B, N, 4] pixels,
  classes [B, N]) → y [B, 1 + N, D]: the layout's condition, then one per object.

  Each object's y depends on the image, its own box and its own class only; the layout's on
  the whole image and the camera. `drop` [B] (bool, optional) replaces every y of a scene by
  the learned null condition.
  """
  resnet_depth: int = 18
  base_width: int = 64
  num_stages: int = 4
  roi_size: int = 8
  roi_channels: int = 256
  feature_width: int = 512
  condition_size: int = 512
  box_frequencies: int = 10
  layout_from_image: bool = True
  norm: str = 'group'  # the backbone's: 'frozen_batch' for converted torchvision weights
  num_classes: int = len(CLASSES)
  dtype: Any = jnp.float32  # of the convolutions and products (training.compute_dtype)

  def setup(self):
    self.backbone = ResNet(self.resnet_depth, self.base_width, self.num_stages, self.norm,
                           self.dtype)
    self.project = nn.Conv(self.roi_channels, (1, 1), dtype=self.dtype)
    self.roi_head = RoiHead(self.feature_width, self.dtype)
    self.output = nn.Dense(self.condition_size, dtype=self.dtype)
    if self.layout_from_image:
      self.layout_head = RoiHead(self.feature_width, self.dtype)
      self.layout_output = nn.Dense(self.condition_size, dtype=self.dtype)
    else:
      self.layout_token = self.param('layout_token', nn.initializers.normal(1.0),
                                     (self.condition_size,))
    self.null_condition = self.param('null_condition', nn.initializers.normal(0.02),
                                     (self.condition_size,))

  @property
  def stride(self) -> int:
    return feature_stride(self.num_stages)

  def null(self, batch_size: int, num_objects: int):
    """The null condition broadcast to [B, 1 + N, D]: unconditional sampling needs no image."""
    return jnp.broadcast_to(self.null_condition,
                            (batch_size, 1 + num_objects, self.condition_size))

  def __call__(self, image, K, world_to_cam, bbox2d, classes, drop=None):
    batch_size, height, width = image.shape[:3]
    features = self.project(self.backbone(image))
    align = jax.vmap(functools.partial(roi_align, output_size=self.roi_size, stride=self.stride))
    objects = self.output(jnp.concatenate([
        self.roi_head(align(features, bbox2d)),  # [B, N, S, S, C] → [B, N, F]
        box_encoding(bbox2d, (height, width), self.box_frequencies),
        jax.nn.one_hot(classes, self.num_classes, dtype=jnp.float32),
    ], axis=-1))
    if self.layout_from_image:
      frame = jnp.broadcast_to(jnp.array([0.0, 0.0, width - 1, height - 1]), (batch_size, 1, 4))
      layout = self.layout_output(jnp.concatenate([
          self.layout_head(align(features, frame)),
          camera_encoding(K, world_to_cam, (height, width))[:, None],
      ], axis=-1))
    else:
      layout = jnp.broadcast_to(self.layout_token, (batch_size, 1, self.condition_size))
    y = jnp.concatenate([layout, objects], axis=1).astype(jnp.float32)
    if drop is not None:
      y = jnp.where(jnp.asarray(drop)[:, None, None], self.null_condition, y)
    return y
