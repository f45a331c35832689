"""The image encoder: ROI-align conventions (known answers and a slow reference), the
per-object and layout conditions (shapes, what each depends on, box and camera encodings),
the null condition, purity."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax.geometry import camera as camera_lib
from scenediff_jax.models.image_encoder import (
  ImageEncoder,
  ResNet,
  box_encoding,
  camera_encoding,
  feature_stride,
  max_pool_3x3_stride_2,
  num_groups,
  roi_align,
)

TINY = dict(resnet_depth=18, base_width=8, num_stages=2, roi_size=4, roi_channels=8,
            feature_width=16, condition_size=16, box_frequencies=4)
HEIGHT, WIDTH = 48, 64


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (2, HEIGHT, WIDTH, 3), dtype=np.uint8)
  bbox2d = np.array([[[4, 6, 30, 40], [35, 2, 60, 20], [10, 30, 50, 45], [0, 0, 0, 0]],
                     [[0, 0, 63, 47], [20, 10, 28, 18], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
  classes = np.array([[1, 3, 8, 0], [0, 9, 0, 0]], np.int32)  # padded objects: class 0
  K = np.stack([camera_lib.intrinsics(50.0, (WIDTH - 1) / 2, (HEIGHT - 1) / 2)] * 2
               ).astype(np.float32)
  world_to_cam = np.stack([camera_lib.world_to_cam(0.2, 0.05),
                           camera_lib.world_to_cam(0.4, -0.03)]).astype(np.float32)
  return image, K, world_to_cam, bbox2d, classes


def _init(model, seed=0):
  # Jitted init with an 'rbg' key: compiling threefry for every parameter costs ~8× more
  # CPU time here, eager init ~3×.
  return jax.jit(model.init)(jax.random.key(seed, impl='rbg'), *_inputs())


@pytest.fixture(scope='module')
def tiny():
  """The tiny ResNet-18 encoder, its params, and its jitted apply."""
  model = ImageEncoder(**TINY)
  return model, _init(model), jax.jit(model.apply)


def roi_align_reference(features, boxes, output_size, stride, sampling_ratio=2):
  """Plain loops: bin (i, j) of a box averages r² clamped bilinear samples."""
  h, w, c = features.shape
  r = sampling_ratio

  def sample(py, px):
    gy = min(max((py - (stride - 1) / 2) / stride, 0.0), h - 1)
    gx = min(max((px - (stride - 1) / 2) / stride, 0.0), w - 1)
    y0, x0 = int(np.floor(gy)), int(np.floor(gx))
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = gy - y0, gx - x0
    return ((1 - fy) * (1 - fx) * features[y0, x0] + (1 - fy) * fx * features[y0, x1] +
            fy * (1 - fx) * features[y1, x0] + fy * fx * features[y1, x1])

  out = np.zeros((len(boxes), output_size, output_size, c))
  for n, (bx1, by1, bx2, by2) in enumerate(boxes):
    bin_w, bin_h = (bx2 - bx1 + 1) / output_size, (by2 - by1 + 1) / output_size
    for i in range(output_size):
      for j in range(output_size):
        for a in range(r):
          for b in range(r):
            py = by1 - 0.5 + (i + (a + 0.5) / r) * bin_h
            px = bx1 - 0.5 + (j + (b + 0.5) / r) * bin_w
            out[n, i, j] += sample(py, px) / r**2
  return out


@pytest.mark.parametrize('stride,map_hw,lo,hi', [(1, (20, 24), 1.0, 18.0), (8, (6, 7), 4.5, 42.0)])
def test_roi_align_reproduces_a_linear_function_at_bin_centres(stride, map_hw, lo, hi):
  hf, wf = map_hw
  coef = np.array([[0.7, -1.3, 2.0], [0.1, 0.4, -0.2]])  # per channel: a, b, c (channels 3)
  u = np.arange(wf) * stride + (stride - 1) / 2  # cell centres in pixels
  v = np.arange(hf) * stride + (stride - 1) / 2
  features = u[None, :, None] * coef[0] + v[:, None, None] * coef[1] + np.array([5.0, -1.0, 0.5])
  rng = np.random.default_rng(1)
  x1y1 = rng.uniform(lo, lo + 0.4 * (hi - lo), (6, 2))
  x2y2 = x1y1 + rng.uniform(1.0, 0.6 * (hi - lo) - 1.0, (6, 2))
  boxes = np.concatenate([x1y1, x2y2], 1).astype(np.float32)
  size = 5
  out = roi_align(jnp.asarray(features, jnp.float32), boxes, size, stride)
  assert out.shape == (6, size, size, 3)
  centres = (np.arange(size) + 0.5) / size
  cx = boxes[:, 0, None] - 0.5 + centres * (boxes[:, 2, None] - boxes[:, 0, None] + 1)
  cy = boxes[:, 1, None] - 0.5 + centres * (boxes[:, 3, None] - boxes[:, 1, None] + 1)
  expected = (cx[:, None, :, None] * coef[0] + cy[:, :, None, None] * coef[1] +
              np.array([5.0, -1.0, 0.5]))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('stride,sampling_ratio', [(1, 2), (4, 2), (4, 3)])
def test_roi_align_matches_slow_reference_including_borders(stride, sampling_ratio):
  rng = np.random.default_rng(2)
  hf, wf = 6, 7
  features = rng.normal(size=(hf, wf, 3)).astype(np.float32)
  h_img, w_img = hf * stride, wf * stride
  corners = rng.uniform(-3, [w_img + 3, h_img + 3] * 2, (8, 4))
  boxes = np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]),
                          np.maximum(corners[:, :2], corners[:, 2:])], 1)
  boxes = np.concatenate([boxes, [[0, 0, w_img - 1, h_img - 1], [-2, -2, 2, 3],
                                  [w_img - 3, h_img - 2, w_img + 4, h_img + 1], [0, 0, 0, 0]]])
  boxes = boxes.astype(np.float32)
  out = roi_align(jnp.asarray(features), boxes, 3, stride, sampling_ratio)
  expected = roi_align_reference(features, boxes, 3, stride, sampling_ratio)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 96, 128, 3), (1, 7, 9, 2)])
def test_max_pool_equals_flax_max_pool_in_value_and_gradient(shape):
  # Random values: no ties inside a window, so both gradients pick the same element.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  reference = lambda x: nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  np.testing.assert_array_equal(max_pool_3x3_stride_2(x), reference(x))
  weights = jnp.asarray(rng.normal(size=reference(x).shape), jnp.float32)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * weights))(x)
  np.testing.assert_array_equal(grad(max_pool_3x3_stride_2), grad(reference))


def test_group_counts_and_backbone_stride():
  assert [num_groups(c) for c in (8, 24, 64, 256, 48, 40)] == [8, 24, 32, 32, 24, 20]
  image = jnp.zeros((1, HEIGHT, WIDTH, 3), jnp.uint8)
  for depth, stages, channels in [(18, 1, 8), (18, 2, 16), (50, 2, 64), (34, 3, 32)]:
    out, _ = jax.eval_shape(
        lambda: ResNet(depth, 8, stages).init_with_output(jax.random.key(0), image))
    s = feature_stride(stages)
    assert out.shape == (1, HEIGHT // s, WIDTH // s, channels), (depth, stages)


@pytest.mark.parametrize('depth', [18, 50])
def test_shapes_and_finite_values_with_padded_objects(depth, tiny):
  model, params, apply = tiny
  if depth != 18:
    model = ImageEncoder(**{**TINY, 'resnet_depth': depth})
    params, apply = _init(model, 1), jax.jit(model.apply)
  inputs = _inputs()
  y = apply(params, *inputs)
  assert y.shape == (2, 1 + 4, TINY['condition_size']) and y.dtype == jnp.float32
  assert np.all(np.isfinite(y))
  if depth == 18:  # gradients through ROI-align of padded (all-zero) boxes stay finite too
    grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, *inputs) ** 2)))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_objects_are_independent_and_see_their_own_pixels(tiny):
  _, params, apply = tiny
  image, K, world_to_cam, bbox2d, classes = _inputs()
  y = apply(params, image, K, world_to_cam, bbox2d, classes)
  # Another object's box and class, another scene's image, and the camera do not matter...
  bbox_b, classes_b = bbox2d.copy(), classes.copy()
  bbox_b[0, 2] = [40, 20, 62, 46]
  classes_b[0, 2] = 5
  image_b = image.copy()
  image_b[1] = 255 - image_b[1]
  y_b = apply(params, image_b, K, world_to_cam[::-1], bbox_b, classes_b)
  same = 1 + np.array([0, 1, 3])
  np.testing.assert_allclose(y_b[0, same], y[0, same], atol=1e-6)
  assert not np.allclose(y_b[0, 1 + 2], y[0, 1 + 2], atol=1e-4)
  assert not np.allclose(y_b[1, 1:], y[1, 1:], atol=1e-4)
  # ...but the pixels inside an object's own box do.
  image_c = image.copy()
  image_c[0, 10:35, 8:26] = 0  # inside object 0's box (4, 6, 30, 40)
  y_c = apply(params, image_c, K, world_to_cam, bbox2d, classes)
  assert not np.allclose(y_c[0, 1 + 0], y[0, 1 + 0], atol=1e-4)
  np.testing.assert_allclose(y_c[1], y[1], atol=1e-6)


def test_the_layout_sees_the_whole_image_and_the_camera_not_the_boxes(tiny):
  _, params, apply = tiny
  image, K, world_to_cam, bbox2d, classes = _inputs()
  y = apply(params, image, K, world_to_cam, bbox2d, classes)
  # Other boxes and classes leave the layout's condition alone.
  y_boxes = apply(params, image, K, world_to_cam, bbox2d[::-1], classes[::-1])
  np.testing.assert_allclose(y_boxes[:, 0], y[:, 0], atol=1e-6)
  # Pixels outside every box, the pitch and the focal length each change it.
  image_corner = image.copy()
  image_corner[0, 41:, :4] = 255 - image_corner[0, 41:, :4]  # no box of scene 0 covers this
  y_corner = apply(params, image_corner, K, world_to_cam, bbox2d, classes)
  assert not np.allclose(y_corner[0, 0], y[0, 0], atol=1e-4)
  np.testing.assert_allclose(y_corner[1], y[1], atol=1e-6)
  y_pitch = apply(params, image, K, world_to_cam[::-1], bbox2d, classes)
  assert not np.allclose(y_pitch[:, 0], y[:, 0], atol=1e-4)
  np.testing.assert_allclose(y_pitch[:, 1:], y[:, 1:], atol=1e-6)
  K_long = K.copy()
  K_long[1, :2, :2] *= 1.5
  y_focal = apply(params, image, K_long, world_to_cam, bbox2d, classes)
  assert changed_only(y_focal, y, (1, 0))


def changed_only(a, b, index):
  """True when a and b differ at `index` and nowhere else."""
  a, b = np.asarray(a).copy(), np.asarray(b).copy()
  if np.allclose(a[index], b[index], atol=1e-4):
    return False
  a[index] = b[index]
  return np.allclose(a, b, atol=1e-6)


def test_camera_encoding_is_resolution_free():
  K = camera_lib.intrinsics(300.0, 159.5, 119.5)
  R = camera_lib.world_to_cam(0.3, 0.1)
  enc = camera_encoding(jnp.asarray(K), jnp.asarray(R), (240, 320))
  np.testing.assert_allclose(enc[:4], [300 / 320, 300 / 240, 159.5 / 320, 119.5 / 240], rtol=1e-6)
  np.testing.assert_allclose(enc[4:], R.reshape(9), atol=1e-6)
  # Twice the resolution with K scaled alike: the same intrinsics part.
  K2 = np.diag([2.0, 2.0, 1.0]) @ K
  enc2 = camera_encoding(jnp.asarray(K2), jnp.asarray(R), (480, 640))
  np.testing.assert_allclose(enc2[:4], enc[:4], rtol=1e-3)


def test_a_learned_layout_token_instead_of_the_image():
  model = ImageEncoder(**TINY, layout_from_image=False)
  params = _init(model)
  image, K, world_to_cam, bbox2d, classes = _inputs()
  y = model.apply(params, image, K, world_to_cam, bbox2d, classes)
  token = params['params']['layout_token']
  np.testing.assert_array_equal(y[:, 0], np.broadcast_to(token, y[:, 0].shape))
  assert 'layout_head' not in params['params']


def test_drop_gives_the_null_condition(tiny):
  model, params, apply = tiny
  inputs = _inputs()
  y = apply(params, *inputs)
  y_drop = apply(params, *inputs, drop=jnp.array([True, False]))
  null = params['params']['null_condition']
  assert null.shape == (TINY['condition_size'],) and np.any(null != 0)
  np.testing.assert_array_equal(y_drop[0], np.broadcast_to(null, y_drop[0].shape))
  np.testing.assert_allclose(y_drop[1], y[1], atol=1e-6)
  assert not np.allclose(y[0], y_drop[0], atol=1e-4)
  null_batch = model.apply(params, 2, 4, method=ImageEncoder.null)
  np.testing.assert_array_equal(null_batch,
                                np.broadcast_to(null, (2, 1 + 4, TINY['condition_size'])))
  np.testing.assert_array_equal(apply(params, *inputs, drop=jnp.array([False, False])), y)


def test_box_encoding_known_values():
  enc = box_encoding(jnp.array([[0.0, 0.0, 32.0, 12.0]]), (HEIGHT, WIDTH), 3)[0]
  r = np.sqrt(0.5)
  expected = np.concatenate([[0, 0, 0.5, 0.25],
                             [0, 0, 1, r], [0, 0, 0, 1], [0, 0, 0, 0],        # sin(2^k π x)
                             [1, 1, 0, r], [1, 1, -1, 0], [1, 1, 1, -1]])     # cos(2^k π x)
  np.testing.assert_allclose(enc, expected, atol=1e-6)


def test_condition_encodes_box_position_and_class(tiny):
  _, params, apply = tiny
  # Silence the ROI features so that only the box encoding and the one-hot can differ.
  params = {'params': {**params['params'],
                       'roi_head': jax.tree.map(jnp.zeros_like, params['params']['roi_head'])}}
  image, K, world_to_cam, _, _ = _inputs()
  bbox2d = np.array([[[4, 6, 30, 40], [8, 6, 34, 40], [4, 6, 30, 40], [4, 6, 30, 40]]] * 2,
                    np.float32)
  classes = np.array([[2, 2, 2, 7]] * 2, np.int32)
  y = apply(params, image, K, world_to_cam, bbox2d, classes)[:, 1:]
  np.testing.assert_allclose(y[0, 0], y[0, 2], atol=1e-6)  # same box and class
  np.testing.assert_allclose(y[0], y[1], atol=1e-6)  # the image no longer matters
  assert not np.allclose(y[0, 0], y[0, 1], atol=1e-4)  # shifted box
  assert not np.allclose(y[0, 0], y[0, 3], atol=1e-4)  # other class


def test_jit_and_pure_apply(tiny):
  model, params, _ = tiny
  inputs = _inputs()
  drop = jnp.array([False, True])
  apply = jax.jit(model.apply)
  a = apply(params, *inputs, drop)
  b = apply(params, *inputs, drop)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, model.apply(params, *inputs, drop=drop), atol=1e-5)
  np.testing.assert_array_equal(model.apply(params, *inputs), model.apply(params, *inputs))
