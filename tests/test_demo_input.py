"""Demo folders are read, resized and repaired by known answers; bad input fails in one line."""
import json
import logging
import os

import numpy as np
from PIL import Image
import pytest

from scenediff_jax.geometry import camera
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.inference import demo_input as di

H0, W0 = 400, 640  # not 4:3, so the two axes scale differently
SIZE = (192, 256)  # the model's (H, W): sx = 0.4, sy = 0.48
K0 = np.array([[500.0, 0, 320], [0, 480, 200], [0, 0, 1]])
DETECTIONS = [
    {'bbox': [100, 50, 299, 149], 'class': 'bed', 'score': 0.9},
    {'bbox': [10, 20, 40, 60], 'class': 'night_stand'},  # no score: 1.0
    {'bbox': [300, 0, 639, 399], 'class': 'bookshelf', 'score': 0.5, 'mask': [[0, 1]]},
    {'bbox': [0, 0, 10, 10], 'class': 'picture', 'score': 0.8},  # unsupported
    {'bbox': [400, 100, 500, 300], 'class': 'Night Stand', 'score': 0.7},
]


def _image(mode='RGB', size=(W0, H0)):
  """Red left half, blue right half (grey levels in single-channel modes)."""
  w, h = size
  rgb = np.zeros((h, w, 3), np.uint8)
  rgb[:, :w // 2, 0] = 220
  rgb[:, w // 2:, 2] = 220
  img = Image.fromarray(rgb)
  return img.convert('L').convert(mode) if mode in ('L', 'LA') else img.convert(mode)


def _folder(path, image=None, image_name='img.jpg', K=K0, detections=DETECTIONS):
  os.makedirs(path, exist_ok=True)
  if image_name is not None:
    (_image() if image is None else image).save(os.path.join(path, image_name))
  if K is not None:
    np.savetxt(os.path.join(path, 'cam_K.txt'), K)
  if detections is not None:
    with open(os.path.join(path, 'detections.json'), 'w') as f:
      json.dump(detections, f)
  return str(path)


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_valid_folder_resized_and_mapped(tmp_path, caplog):
  folder = _folder(tmp_path / 'scene1')
  with caplog.at_level(logging.INFO, logger='absl'):
    d = di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.0, roll=0.0)
  assert d.name == 'scene1'
  assert d.image.shape == SIZE + (3,) and d.image.dtype == np.uint8
  assert d.original_image.shape == (H0, W0, 3)
  # Red on the left, blue on the right after resizing too (JPEG-tolerant).
  assert d.image[96, 20, 0] > 180 and d.image[96, 20, 2] < 40
  assert d.image[96, 236, 2] > 180 and d.image[96, 236, 0] < 40
  np.testing.assert_allclose(d.original_K, K0)
  # K: a point projected with K0, moved with u → (u + 0.5)·s − 0.5, lands where the new K puts it.
  sx, sy = SIZE[1] / W0, SIZE[0] / H0
  point = np.array([0.3, -0.2, 2.0])
  uv0, _ = camera.project(point, K0, np.eye(3))
  uv, _ = camera.project(point, d.K.astype(np.float64), np.eye(3))
  np.testing.assert_allclose(uv, (uv0 + 0.5) * [sx, sy] - 0.5, atol=1e-4)
  # Boxes keep passing through extreme pixel centres: [x1·s, (x2 + 1)·s − 1].
  np.testing.assert_allclose(d.bbox2d[0], [40, 24, 119, 71], atol=1e-4)
  np.testing.assert_allclose(d.bbox2d[2], [120, 0, 255, 191], atol=1e-4)  # reaches both edges
  np.testing.assert_allclose(d.original_bbox2d[0], DETECTIONS[0]['bbox'])
  nightstand, cabinet = CLASSES.index('nightstand'), CLASSES.index('cabinet')
  assert nightstand == 6
  np.testing.assert_array_equal(d.classes, [CLASSES.index('bed'), nightstand, cabinet, nightstand])
  assert d.classes.dtype == np.int32 and d.bbox2d.dtype == np.float32 and d.K.dtype == np.float32
  np.testing.assert_allclose(d.scores, [0.9, 1.0, 0.5, 0.7], rtol=1e-6)
  warned = [m for m in _warnings(caplog) if 'picture' in m]
  assert len(warned) == 1 and '\n' not in warned[0] and 'detections.json' in warned[0]
  assert warned[0] in d.notes


@pytest.mark.parametrize('mode,name', [('L', 'img.png'), ('RGBA', 'img.png'), ('P', 'img.png'),
                                       ('L', 'img.jpeg'), ('RGB', 'img.bmp')])
def test_other_formats_and_modes(tmp_path, mode, name):
  folder = _folder(tmp_path / 'f', image=_image(mode), image_name=name)
  d = di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.0, roll=0.0)
  assert d.original_image.shape == (H0, W0, 3) and d.original_image.dtype == np.uint8
  assert d.image.shape == SIZE + (3,)
  if mode == 'L':
    np.testing.assert_array_equal(d.original_image[..., 0], d.original_image[..., 2])
  assert d.original_image[:, :W0 // 2].mean() > d.original_image[:, W0 // 2:, 1].mean()


def test_world_to_cam_given_or_level(tmp_path, caplog):
  folder = _folder(tmp_path / 'f')
  d = di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.2, roll=-0.05)
  np.testing.assert_allclose(d.world_to_cam, camera.world_to_cam(0.2, -0.05), atol=1e-6)
  assert not any('not given' in n for n in d.notes)
  assert d.camera['pitch_roll_source'] == 'given (--pitch, --roll)'
  with caplog.at_level(logging.INFO, logger='absl'):
    d = di.read_demo_input(folder, SIZE, max_objects=8, camera_mode='level')
  np.testing.assert_allclose(d.world_to_cam, np.eye(3), atol=1e-7)
  assert d.camera['pitch_roll_source'] == 'level (--camera=level)'
  assert d.camera['K_source'] == 'cam_K.txt'
  note = 'camera pitch/roll not given: assuming 0 (level camera); pass --pitch/--roll'
  assert sum(note in n for n in d.notes) == 1
  assert sum(note in r.getMessage() for r in caplog.records) == 1


def test_find_inputs(tmp_path):
  single = _folder(tmp_path / 'single')
  assert di.find_inputs(single) == [single]
  parent = tmp_path / 'parent'
  for name in ('b', 'c', 'a'):
    _folder(parent / name)
  os.makedirs(parent / 'notes')  # not a demo folder
  (parent / 'README.txt').write_text('x')
  assert di.find_inputs(str(parent)) == [str(parent / n) for n in ('a', 'b', 'c')]
  os.makedirs(tmp_path / 'empty' / 'sub')
  for path in (tmp_path / 'empty', tmp_path / 'missing', tmp_path / 'parent' / 'README.txt'):
    with pytest.raises(di.InputError) as e:
      di.find_inputs(path)
    assert '\n' not in str(e.value) and str(path) in str(e.value)
  with pytest.raises(di.InputError, match='cam_K.txt'):  # says what a demo folder holds
    di.find_inputs(tmp_path / 'empty')


def _write(name, content):
  def corrupt(folder):
    path = os.path.join(folder, name)
    if content is None:
      os.remove(path)
    else:
      with open(path, 'wb' if isinstance(content, bytes) else 'w') as f:
        f.write(content if isinstance(content, (str, bytes)) else json.dumps(content))
  return corrupt


def _truncate_image(folder):
  path = os.path.join(folder, 'img.jpg')
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])


def _box(bbox, **kw):
  return [{'bbox': bbox, 'class': 'chair', **kw}]


ERRORS = {
    'no image': ('img', _write('img.jpg', None)),
    'no detections': ('detections.json', _write('detections.json', None)),
    'not an image': ('img.jpg', _write('img.jpg', b'not an image at all')),
    'truncated image': ('img.jpg', _truncate_image),
    'K words': ('cam_K.txt', _write('cam_K.txt', 'fx 0 cx\n0 fy cy\n0 0 1\n')),
    'K empty': ('cam_K.txt', _write('cam_K.txt', '')),
    'K 2x3': ('cam_K.txt', _write('cam_K.txt', '500 0 320\n0 480 200\n')),
    'K 3x4': ('cam_K.txt', _write('cam_K.txt', '500 0 320 0\n0 480 200 0\n0 0 1 0\n')),
    'K nan': ('cam_K.txt', _write('cam_K.txt', '500 0 nan\n0 480 200\n0 0 1\n')),
    'K inf': ('cam_K.txt', _write('cam_K.txt', 'inf 0 320\n0 480 200\n0 0 1\n')),
    'K fx 0': ('cam_K.txt', _write('cam_K.txt', '0 0 320\n0 480 200\n0 0 1\n')),
    'K fy < 0': ('cam_K.txt', _write('cam_K.txt', '500 0 320\n0 -480 200\n0 0 1\n')),
    'K last row': ('cam_K.txt', _write('cam_K.txt', '500 0 320\n0 480 200\n0 0 1.01\n')),
    'K transposed': ('cam_K.txt', _write('cam_K.txt', '500 0 0\n0 480 0\n320 200 1\n')),
    'not JSON': ('detections.json', _write('detections.json', '[{"bbox": [1, 2')),
    'not a list': ('detections.json', _write('detections.json', {'bbox': [0, 0, 5, 5]})),
    'empty list': ('detections.json', _write('detections.json', [])),
    'entry not a dict': ('detections.json', _write('detections.json', [[0, 0, 5, 5]])),
    'no bbox': ('detections.json', _write('detections.json', [{'class': 'bed'}])),
    'no class': ('detections.json', _write('detections.json', [{'bbox': [0, 0, 5, 5]}])),
    'class not str': ('detections.json', _write('detections.json',
                                               [{'bbox': [0, 0, 5, 5], 'class': 3}])),
    'bbox 3 numbers': ('detections.json', _write('detections.json', _box([0, 0, 5]))),
    'bbox strings': ('detections.json', _write('detections.json', _box(['0', '0', '5', '5']))),
    'bbox NaN': ('detections.json', _write('detections.json', _box([0, float('nan'), 5, 5]))),
    'bbox inf': ('detections.json', _write('detections.json', _box([0, 0, float('inf'), 5]))),
    'score NaN': ('detections.json', _write('detections.json',
                                           _box([0, 0, 5, 5], score=float('nan')))),
    'score string': ('detections.json', _write('detections.json', _box([0, 0, 5, 5], score='hi'))),
    'all unsupported': ('detections.json', _write('detections.json',
                                                 [{'bbox': [0, 0, 5, 5], 'class': 'picture'}])),
    'all outside': ('detections.json', _write('detections.json', _box([700, 0, 800, 50]))),
}


@pytest.mark.parametrize('case', list(ERRORS))
def test_errors_are_one_line_and_name_the_file(tmp_path, case):
  file_name, corrupt = ERRORS[case]
  folder = _folder(tmp_path / 'f')
  corrupt(folder)
  with pytest.raises(di.InputError) as e:
    di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.0, roll=0.0)
  message = str(e.value)
  assert '\n' not in message and os.path.join(folder, file_name) in message, message
  assert isinstance(e.value, ValueError)


def test_nothing_to_reconstruct_says_so(tmp_path):
  for case in ('empty list', 'all unsupported', 'all outside'):
    folder = _folder(tmp_path / case.replace(' ', '_'))
    ERRORS[case][1](folder)
    with pytest.raises(di.InputError, match='nothing to reconstruct'):
      di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.0, roll=0.0)


def test_clipping_and_dropping(tmp_path, caplog):
  detections = [
      {'bbox': [-20, -10, 700, 450], 'class': 'bed'},      # 0 clipped to the whole image
      {'bbox': [50, 50, 40, 60], 'class': 'chair'},        # 1 inverted
      {'bbox': [600, 380, 700, 420], 'class': 'lamp'},     # 2 clipped
      {'bbox': [700, 10, 800, 50], 'class': 'chair'},      # 3 wholly outside
      {'bbox': [-50, -50, -10, -5], 'class': 'chair'},     # 4 wholly outside
      {'bbox': [-30, 10, 0, 50], 'class': 'chair'},        # 5 zero width after clipping
      {'bbox': [50, 50, 80, 50], 'class': 'chair'},        # 6 zero height
      {'bbox': [10, 10, 30, 30], 'class': 'sink'},         # 7 fine
  ]
  folder = _folder(tmp_path / 'f', detections=detections)
  with caplog.at_level(logging.INFO, logger='absl'):
    d = di.read_demo_input(folder, SIZE, max_objects=8, pitch=0.0, roll=0.0)
  np.testing.assert_allclose(d.original_bbox2d, [[0, 0, 639, 399], [600, 380, 639, 399],
                                                 [10, 10, 30, 30]])
  np.testing.assert_allclose(d.bbox2d[0], [0, 0, 255, 191], atol=1e-4)
  np.testing.assert_array_equal(d.classes, [CLASSES.index(c) for c in ('bed', 'lamp', 'sink')])
  warnings = _warnings(caplog)
  assert all('\n' not in w for w in warnings)
  clipped = [w for w in warnings if 'clipped' in w]
  dropped = [w for w in warnings if 'dropped' in w]
  assert len(clipped) == 1 and 'entries 0, 2 ' in clipped[0]
  assert len(dropped) == 1
  assert 'inverted (x2 < x1 or y2 < y1): entries 1;' in dropped[0]
  assert 'outside the image: entries 3, 4;' in dropped[0]
  assert 'zero area after clipping: entries 5, 6 ' in dropped[0]


@pytest.mark.parametrize('max_objects,kept', [(3, [1, 4, 5]), (4, [0, 1, 4, 5]), (6, range(6))])
def test_too_many_keeps_the_highest_scores(tmp_path, caplog, max_objects, kept):
  scores = [0.5, 0.9, 0.5, 0.1, 0.9, 0.7]  # ties at 0.9 and at 0.5: the first 0.5 wins
  detections = [{'bbox': [10 * i, 0, 10 * i + 5, 5], 'class': 'chair', 'score': s}
                for i, s in enumerate(scores)]
  folder = _folder(tmp_path / 'f', detections=detections)
  with caplog.at_level(logging.INFO, logger='absl'):
    d = di.read_demo_input(folder, SIZE, max_objects=max_objects, pitch=0.0, roll=0.0)
  np.testing.assert_allclose(d.original_bbox2d[:, 0], [10 * i for i in kept])
  np.testing.assert_allclose(d.scores, [scores[i] for i in kept], rtol=1e-6)
  warned = [w for w in _warnings(caplog) if 'at most' in w]
  assert len(warned) == (max_objects < len(scores))


def test_class_names_match_loosely():
  for name in ('night_stand', 'Night Stand', 'night-stand', ' NIGHT_STAND ', 'Nightstand'):
    assert di.NYU40_TO_CLASS[di.normalize_class_name(name)] == 'nightstand'
  assert di.NYU40_TO_CLASS['bookshelf'] == di.NYU40_TO_CLASS['shelves'] == 'cabinet'
  assert set(di.NYU40_TO_CLASS.values()) == set(CLASSES)
  assert 'counter' not in di.NYU40_TO_CLASS
