"""The camera of a photo without cam_K.txt or flags: K from EXIF or the default field of view,
pitch and roll from the image's edges, by known answers."""
import json
import logging
import math
import os

import numpy as np
from PIL import Image, ImageDraw
import pytest

from data_pipelines.synth_rooms.scene import SceneConfig, generate_scene
from scenediff_jax.geometry import camera
from scenediff_jax.inference import demo_input, gravity, intrinsics
from scenediff_jax.jobs import camera_accuracy

W, H = 640, 480
EXIF_IFD = intrinsics.EXIF_IFD


def _photo(path, tags=None, size=(W, H)):
  image = Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8))
  exif = Image.Exif()
  for tag, value in (tags or {}).items():
    exif.get_ifd(EXIF_IFD)[tag] = value
  image.save(path, exif=exif)
  return path


def _demo(folder, tags=None):
  os.makedirs(folder, exist_ok=True)
  _photo(os.path.join(folder, 'img.jpg'), tags)
  with open(os.path.join(folder, 'detections.json'), 'w') as f:
    json.dump([{'bbox': [100, 100, 300, 400], 'class': 'chair'}], f)
  return str(folder)


@pytest.mark.parametrize('tags, focal', [
    # 26 mm equivalent (a phone's main camera): on the 800 px diagonal, 26 · 800 / 43.27.
    ({intrinsics.FOCAL_LENGTH_35MM: 26}, 26 * 800 / math.hypot(36, 24)),
    # 4.25 mm on a sensor of 150 px/mm (FocalPlaneXResolution 1500 per cm).
    ({intrinsics.FOCAL_LENGTH: 4.25, intrinsics.FOCAL_PLANE_X_RESOLUTION: 1500.0,
      intrinsics.FOCAL_PLANE_RESOLUTION_UNIT: 3}, 4.25 * 150),
    # ... and 3810 px per inch: 150 px/mm again (the unit tag absent means inches).
    ({intrinsics.FOCAL_LENGTH: 4.25, intrinsics.FOCAL_PLANE_X_RESOLUTION: 3810.0}, 4.25 * 150),
    # The 35 mm figure wins over the other pair.
    ({intrinsics.FOCAL_LENGTH_35MM: 28, intrinsics.FOCAL_LENGTH: 4.25,
      intrinsics.FOCAL_PLANE_X_RESOLUTION: 3810.0}, 28 * 800 / math.hypot(36, 24)),
])
def test_exif_focal_lengths_give_the_expected_K(tmp_path, tags, focal):
  K, source = intrinsics.photo_intrinsics(_photo(tmp_path / 'img.jpg', tags), W, H)
  np.testing.assert_allclose(K, [[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1]])
  assert source.startswith('EXIF')


def test_a_photo_without_exif_gets_the_kinect_field_of_view_and_one_warning(tmp_path, caplog):
  folder = _demo(tmp_path / 'photo', tags={intrinsics.FOCAL_LENGTH: 0})  # 0: unusable
  with caplog.at_level(logging.INFO, logger='absl'):
    scene = demo_input.read_demo_input(folder, (192, 256), 4, pitch=0.0, roll=0.0)
  # SUN RGB-D's 529.5 px at 640 wide, so the 62.3° of SynthRooms' renders.
  np.testing.assert_allclose(scene.original_K[0, 0], 529.5, rtol=1e-6)
  assert 'default field of view, 62.3°' in scene.camera['K_source']
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and 'cam_K.txt: missing' in warnings[0], warnings
  # With EXIF the record names it, and the model's K is the EXIF one rescaled.
  scene = demo_input.read_demo_input(_demo(tmp_path / 'phone', {intrinsics.FOCAL_LENGTH_35MM: 26}),
                                     (240, 320), 4, pitch=0.0, roll=0.0)
  assert scene.camera['K_source'] == 'EXIF FocalLengthIn35mmFilm = 26 mm'
  np.testing.assert_allclose(scene.K[0, 0], 26 * 800 / math.hypot(36, 24) / 2, rtol=1e-5)


def _line_drawing(K, pitch, roll, size=(W, H)):
  """A wireframe room corner seen by a camera of known pitch and roll: vertical edges, and
  horizontal ones in two directions, drawn as anti-aliased-free dark lines on grey."""
  R = camera.world_to_cam(pitch, roll)
  image = Image.new('RGB', size, (170, 170, 170))
  draw = ImageDraw.Draw(image)
  lines = []
  for x in np.linspace(-2.5, 2.5, 7):  # vertical edges 3-5 m ahead, 0.3 to 2.6 m tall
    for z in (3.0, 5.0):
      lines.append(([x, 0.3, z], [x, -2.6, z]))
  for y in (0.8, 1.4):  # horizontal edges below the camera (floor boards), both directions
    for x in np.linspace(-2, 2, 5):
      lines.append(([x, y, 2.5], [x, y, 6.0]))
    for z in (3.5, 4.5):
      lines.append(([-2.5, y, z], [2.5, y, z]))
  for a, b in lines:
    pixels, depth = camera.project(np.array([a, b], np.float64), K, R)
    if np.all(depth > 0):
      draw.line([tuple(p) for p in pixels], fill=(40, 40, 40), width=3)
  return np.asarray(image)


@pytest.mark.parametrize('pitch, roll', [(0.0, 0.0), (12.0, -3.0), (25.0, 4.0), (-8.0, 2.0)])
def test_gravity_of_a_drawn_room_is_its_camera(pitch, roll):
  K = camera.intrinsics(500.0, (W - 1) / 2, (H - 1) / 2)
  image = _line_drawing(K, math.radians(pitch), math.radians(roll))
  estimate = gravity.estimate_gravity(image, K)
  assert estimate.reliable, estimate
  assert abs(math.degrees(estimate.pitch) - pitch) < 1.0, estimate
  assert abs(math.degrees(estimate.roll) - roll) < 1.0, estimate
  # A mirrored photo has the opposite roll and the same pitch.
  mirrored = gravity.estimate_gravity(image[:, ::-1], K)
  assert abs(math.degrees(mirrored.roll) + roll) < 1.0, mirrored
  assert abs(math.degrees(mirrored.pitch) - pitch) < 1.0, mirrored


def test_an_image_without_edges_falls_back_to_level():
  K = camera.intrinsics(500.0, (W - 1) / 2, (H - 1) / 2)
  rng = np.random.default_rng(0)
  noise = np.clip(128 + rng.normal(0, 3, (H, W, 3)), 0, 255).astype(np.uint8)
  estimate = gravity.estimate_gravity(noise, K)
  assert not estimate.reliable and estimate.reason
  assert (estimate.pitch, estimate.roll) == (0.0, 0.0)


def test_an_unreliable_estimate_reads_as_a_level_camera_with_a_warning(tmp_path, caplog):
  folder = _demo(tmp_path / 'blank')  # a flat grey photo: no edges at all
  with caplog.at_level(logging.INFO, logger='absl'):
    scene = demo_input.read_demo_input(folder, (192, 256), 4)
  np.testing.assert_allclose(scene.world_to_cam, np.eye(3), atol=1e-7)
  assert scene.camera['pitch_roll_source'].startswith('level: the estimate')
  assert any('could not estimate the camera' in r.getMessage() for r in caplog.records
             if r.levelno >= logging.WARNING)
  # A given angle overrides its estimate, and the record says so.
  scene = demo_input.read_demo_input(folder, (192, 256), 4, pitch=0.1)
  np.testing.assert_allclose(scene.world_to_cam, camera.world_to_cam(0.1, 0.0), atol=1e-6)
  assert scene.camera['pitch_roll_source'].endswith('pitch given (--pitch)')


# The first test scenes of SynthRooms (cameras pitched 0-30°, rolled ±5°), with an upper
# bound on the estimator's errors; on 200 of them the median errors are 1.25° and 0.74°
# (docs/camera_estimation.md).
SYNTH_SCENES = 24


def test_gravity_on_synth_rooms_renders_within_the_bound():
  config = SceneConfig()
  bank = config.bank()
  errors = []
  for index in range(SYNTH_SCENES):
    record = generate_scene(config, 'test', index, bank)
    pitch, roll = camera.pitch_roll(record['world_to_cam'].astype(np.float64))
    estimate = gravity.estimate_gravity(record['image'], record['K'])
    errors.append(np.degrees([abs(estimate.pitch - pitch), abs(estimate.roll - roll)]))
  median = np.median(errors, 0)
  assert median[0] <= 2.0 and median[1] <= 1.5, median


def test_camera_accuracy_counts_a_fallback_as_the_level_camera_it_uses():
  K = camera.intrinsics(500.0, (W - 1) / 2, (H - 1) / 2)
  pitch, roll = math.radians(12.0), math.radians(-3.0)
  drawn = {'image': _line_drawing(K, pitch, roll), 'K': K,
           'world_to_cam': camera.world_to_cam(pitch, roll)}
  blank = {**drawn, 'image': np.full((H, W, 3), 128, np.uint8)}
  figures = camera_accuracy.measure([drawn, blank])
  assert figures['fallback_share'] == 0.5 and figures['num_scenes'] == 2
  # The drawing is estimated within a degree; the blank one is scored at the level camera's
  # error, the true tilt itself (12° and 3°), so the means are about half of that.
  assert abs(figures['pitch']['mean'] - 6.0) < 0.5 and abs(figures['roll']['mean'] - 1.5) < 0.5
