"""torchvision ResNet weights (an ImageNet `state_dict`) → our image encoder's backbone.

For users who have, e.g., `resnet34-b627a593.pth`: set
  --config.image_encoder.norm=frozen_batch --config.training.backbone_weights=PATH
and the scene trainer starts its backbone from them. The backbone must have torchvision's
layout: `norm='frozen_batch'` (BatchNorm in inference form; its running statistics are
folded into a per-channel scale and bias here, so `apply` stays pure), `base_width=64`, and
as many stages as wanted (the weights of stages it does not have are left out).

State dicts are read from `.npz` (numpy only) or from `.pth`/`.pt` (needs torch; or save
it as .npz once with `np.savez(out, **{k: v.numpy() for k, v in torch.load(p).items()})`).
"""
import os

import numpy as np

from scenediff_jax.models.image_encoder import RESNET_BLOCKS, BasicBlock

BATCH_NORM_EPS = 1e-5  # torchvision's


def load_state_dict(path: str) -> dict:
  """name → float32 array of a torchvision state_dict file (.npz, or .pth/.pt with torch)."""
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'No backbone weights at {path}.')
  if path.endswith('.npz'):
    with np.load(path) as f:
      return {k: np.asarray(f[k]) for k in f.files}
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(f'Reading {path} needs torch; or save the state_dict as .npz on a '
                      'machine that has it (see scenediff_jax/models/resnet_weights.py).'
                      ) from error
  state = torch.load(path, map_location='cpu', weights_only=True)
  return {k: v.detach().numpy() for k, v in state.items()}


def _conv(weight):
  """torch OIHW → flax HWIO."""
  return {'kernel': np.transpose(np.asarray(weight, np.float32), (2, 3, 1, 0))}


def _batch_norm(state, prefix):
  scale = state[f'{prefix}.weight'] / np.sqrt(state[f'{prefix}.running_var'] + BATCH_NORM_EPS)
  bias = state[f'{prefix}.bias'] - state[f'{prefix}.running_mean'] * scale
  return {'scale': scale.astype(np.float32), 'bias': bias.astype(np.float32)}


def convert(state: dict, depth: int, num_stages: int = 4) -> dict:
  """The params tree of `ResNet(depth, 64, num_stages, norm='frozen_batch')`."""
  if depth not in RESNET_BLOCKS:
    raise ValueError(f'resnet_depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}')
  if f'layer{num_stages}.0.conv1.weight' not in state:
    raise ValueError(f'The weights have no layer{num_stages}: fewer than the {num_stages} '
                     'stages the image encoder is configured with.')
  block, counts = RESNET_BLOCKS[depth]
  kind = block.__name__
  convs = 2 if block is BasicBlock else 3
  params = {'Conv_0': _conv(state['conv1.weight']),
            'FrozenBatchNorm_0': _batch_norm(state, 'bn1')}
  index = 0
  for stage in range(num_stages):
    for i in range(counts[stage]):
      prefix = f'layer{stage + 1}.{i}'
      ours = {}
      for c in range(convs):
        ours[f'Conv_{c}'] = _conv(state[f'{prefix}.conv{c + 1}.weight'])
        ours[f'FrozenBatchNorm_{c}'] = _batch_norm(state, f'{prefix}.bn{c + 1}')
      if f'{prefix}.downsample.0.weight' in state:
        ours[f'Conv_{convs}'] = _conv(state[f'{prefix}.downsample.0.weight'])
        ours[f'FrozenBatchNorm_{convs}'] = _batch_norm(state, f'{prefix}.downsample.1')
      params[f'{kind}_{index}'] = ours
      index += 1
  return params


def load_into(params, path: str, image_encoder_config) -> dict:
  """`params` of the scene model with the encoder's backbone replaced by the file's weights."""
  e = image_encoder_config
  if e.get('norm', 'group') != 'frozen_batch' or e.base_width != 64:
    raise ValueError('torchvision weights need image_encoder.norm=frozen_batch and '
                     f'base_width=64 (got norm={e.get("norm", "group")!r}, '
                     f'base_width={e.base_width}).')
  backbone = convert(load_state_dict(path), e.resnet_depth, e.num_stages)
  current = params['params']['encoder']['backbone']
  shapes = lambda tree: {k: shapes(v) if isinstance(v, dict) else tuple(np.shape(v))
                         for k, v in tree.items()}
  if shapes(backbone) != shapes(dict(current)):
    raise ValueError(f'The weights in {path} do not fit a ResNet-{e.resnet_depth} with '
                     f'{e.num_stages} stages.')
  encoder = {**params['params']['encoder'], 'backbone': backbone}
  return {**params, 'params': {**params['params'], 'encoder': encoder}}
