"""torchvision ResNet state_dicts convert into our frozen-BatchNorm backbone: its output equals
an independent numpy implementation of torchvision's forward pass (NCHW, OIHW weights,
BatchNorm with running statistics), and torch's own where torchvision is installed."""
import numpy as np
import pytest

from scenediff_jax.models import resnet_weights
from scenediff_jax.models.image_encoder import IMAGENET_PIXELS, RESNET_BLOCKS, BasicBlock, ResNet


def random_state_dict(depth, num_stages, rng, width=64):
  """A torchvision-named state_dict with random weights and BatchNorm statistics."""
  block, counts = RESNET_BLOCKS[depth]
  expansion = 1 if block is BasicBlock else 4
  state = {}

  def conv(name, out, inp, k):
    state[f'{name}.weight'] = rng.normal(0, np.sqrt(2 / (inp * k * k)), (out, inp, k, k))

  def bn(name, c):
    state[f'{name}.weight'] = rng.uniform(0.5, 1.5, c)
    state[f'{name}.bias'] = rng.normal(0, 0.1, c)
    state[f'{name}.running_mean'] = rng.normal(0, 0.2, c)
    state[f'{name}.running_var'] = rng.uniform(0.5, 2.0, c)
    state[f'{name}.num_batches_tracked'] = np.array(7)

  conv('conv1', width, 3, 7)
  bn('bn1', width)
  channels = width
  for s in range(num_stages):
    planes = width * 2 ** s
    for i in range(counts[s]):
      p = f'layer{s + 1}.{i}'
      stride = 2 if s > 0 and i == 0 else 1
      if block is BasicBlock:
        conv(f'{p}.conv1', planes, channels, 3), bn(f'{p}.bn1', planes)
        conv(f'{p}.conv2', planes, planes, 3), bn(f'{p}.bn2', planes)
      else:
        conv(f'{p}.conv1', planes, channels, 1), bn(f'{p}.bn1', planes)
        conv(f'{p}.conv2', planes, planes, 3), bn(f'{p}.bn2', planes)
        conv(f'{p}.conv3', planes * 4, planes, 1), bn(f'{p}.bn3', planes * 4)
      if stride != 1 or channels != planes * expansion:
        conv(f'{p}.downsample.0', planes * expansion, channels, 1)
        bn(f'{p}.downsample.1', planes * expansion)
      channels = planes * expansion
  return {k: np.asarray(v, np.float32) for k, v in state.items()}


# --- torchvision's forward pass, written out in numpy (NCHW) ------------------------------
def conv2d(x, weight, stride, padding):
  n, c, h, w = x.shape
  out, _, k, _ = weight.shape
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
  result = np.zeros((n, out, oh, ow), np.float64)
  for di in range(k):
    for dj in range(k):
      patch = x[:, :, di:di + stride * oh:stride, dj:dj + stride * ow:stride]
      result += np.einsum('nchw,oc->nohw', patch, weight[:, :, di, dj])
  return result


def batch_norm(x, state, name):
  g = lambda key: state[f'{name}.{key}'][None, :, None, None]
  return (x - g('running_mean')) / np.sqrt(g('running_var') + 1e-5) * g('weight') + g('bias')


def max_pool(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  h, w = (x.shape[2] - 3) // 2 + 1, (x.shape[3] - 3) // 2 + 1
  return np.max([x[:, :, i:i + 2 * h:2, j:j + 2 * w:2] for i in range(3) for j in range(3)], 0)


def torchvision_forward(state, depth, num_stages, images_uint8):
  relu = lambda v: np.maximum(v, 0)
  mean, std = (np.array(v)[None, :, None, None] for v in IMAGENET_PIXELS)
  x = (np.transpose(images_uint8, (0, 3, 1, 2)) / 255.0 - mean) / std
  x = max_pool(relu(batch_norm(conv2d(x, state['conv1.weight'], 2, 3), state, 'bn1')))
  block, counts = RESNET_BLOCKS[depth]
  for s in range(num_stages):
    for i in range(counts[s]):
      p = f'layer{s + 1}.{i}'
      stride = 2 if s > 0 and i == 0 else 1
      if block is BasicBlock:
        y = relu(batch_norm(conv2d(x, state[f'{p}.conv1.weight'], stride, 1), state, f'{p}.bn1'))
        y = batch_norm(conv2d(y, state[f'{p}.conv2.weight'], 1, 1), state, f'{p}.bn2')
      else:  # torchvision v1.5: the stride sits on the 3×3
        y = relu(batch_norm(conv2d(x, state[f'{p}.conv1.weight'], 1, 0), state, f'{p}.bn1'))
        y = relu(batch_norm(conv2d(y, state[f'{p}.conv2.weight'], stride, 1), state, f'{p}.bn2'))
        y = batch_norm(conv2d(y, state[f'{p}.conv3.weight'], 1, 0), state, f'{p}.bn3')
      if f'{p}.downsample.0.weight' in state:
        x = batch_norm(conv2d(x, state[f'{p}.downsample.0.weight'], stride, 0), state,
                       f'{p}.downsample.1')
      x = relu(x + y)
  return np.transpose(x, (0, 2, 3, 1))


def ours(state, depth, num_stages, images):
  model = ResNet(depth, 64, num_stages, norm='frozen_batch')
  return np.asarray(model.apply({'params': resnet_weights.convert(state, depth, num_stages)},
                                images))


@pytest.mark.parametrize('depth,num_stages', [(18, 4), (50, 2)])
def test_converted_weights_reproduce_torchvisions_forward_pass(depth, num_stages):
  rng = np.random.default_rng(depth)
  state = random_state_dict(depth, num_stages, rng)
  images = rng.integers(0, 256, (2, 45, 38, 3), np.uint8)  # odd sizes: padding must agree
  expected = torchvision_forward(state, depth, num_stages, images)
  got = ours(state, depth, num_stages, images)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())


def test_npz_round_trip_and_loading_into_the_scene_model(tmp_path):
  import jax

  from configs import synthetic
  from scenediff_jax.benchmark.train_step import random_batch
  from scenediff_jax.models.scene_model import make_model
  from scenediff_jax.training import scene_trainer  # its create_state calls load_into

  rng = np.random.default_rng(0)
  state = random_state_dict(18, 2, rng)
  path = tmp_path / 'resnet18.npz'
  np.savez(path, **state)
  config = synthetic.get_config('smoke')
  config.image_encoder.update(norm='frozen_batch', base_width=64, num_stages=2)
  config.training.backbone_weights = str(path)
  batch = random_batch(config, batch_size=1, image_size=(64, 64))
  model = make_model(config)
  noisy = {k: batch[k] for k in scene_trainer.DIFFUSED}
  # The scene model's parameter shapes (no compile), then the file's weights loaded into it.
  shapes = jax.eval_shape(model.init, jax.random.key(0), batch, noisy, np.zeros(1, np.int32))
  params = resnet_weights.load_into(shapes, config.training.backbone_weights, config.image_encoder)
  np.testing.assert_array_equal(
      params['params']['encoder']['backbone']['BasicBlock_2']['Conv_2']['kernel'],
      np.transpose(state['layer2.0.downsample.0.weight'], (2, 3, 1, 0)))
  # Weights that do not fit the configured backbone are refused with a clear error.
  config.image_encoder.num_stages = 3  # the file has only two stages
  three_stages = {'params': {'encoder': {'backbone': ResNet(18, 64, 3, norm='frozen_batch').init(
      jax.random.key(0), np.zeros((1, 32, 32, 3), np.uint8))['params']}}}
  with pytest.raises(ValueError, match='no layer3'):
    resnet_weights.load_into(three_stages, str(path), config.image_encoder)
  config.image_encoder.update(num_stages=2, norm='group')
  with pytest.raises(ValueError, match='frozen_batch'):
    resnet_weights.load_into(params, str(path), config.image_encoder)


def test_against_torch_where_installed():
  torchvision = pytest.importorskip('torchvision')
  import torch
  model = torchvision.models.resnet34().eval()
  with torch.no_grad():  # random BatchNorm statistics, so that folding them matters
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2.0)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  images = np.random.default_rng(0).integers(0, 256, (2, 64, 80, 3), np.uint8)
  mean, std = (torch.tensor(v)[None, :, None, None] for v in IMAGENET_PIXELS)
  x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
  with torch.no_grad():
    trunk = torch.nn.Sequential(*list(model.children())[:-2])
    expected = trunk(x).permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(ours(state, 34, 4, images), expected,
                             atol=1e-4 * np.abs(expected).max())
