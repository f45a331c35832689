"""The TFDS builders write array_record files that TFDS data sources read back, without
TensorFlow, and the main job builds and previews them from the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import contact_sheet, registry
from data_pipelines.synth_rooms import builder as builder_lib
from data_pipelines.synth_rooms import raytrace, shape_bank
from data_pipelines.synth_rooms.builder import builder_config
from data_pipelines.synth_rooms.scene import generate_scene
from scenediff_jax.geometry import CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('tfds'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(builder_lib, 'SHARD_SIZE', 10)  # several shards even for `tiny`
    registry.build('synth_rooms', d, 'tiny')
    registry.build('synth_shapes', d, 'tiny')
  return d


def test_synth_rooms_tiny_round_trips_through_array_record(data_dir):
  builder = registry.get_builder('synth_rooms', data_dir, 'tiny')
  config = builder_config('tiny')
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  assert (len(train), len(test)) == (config.num_train, config.num_test)
  shards = [f for f in os.listdir(builder.data_dir) if 'synth_rooms-train.array_record' in f]
  assert len(shards) == 3  # 24 scenes in shards of 10
  # Examples are stored in generation order, across shards too.
  assert [int(train[i]['scene_id']) for i in range(len(train))] == list(range(len(train)))
  record = train[15]
  expected = generate_scene(config.scene, 'train', 15)
  for key in ('image', 'depth', 'instances', 'K', 'world_to_cam', 'layout'):
    np.testing.assert_array_equal(record[key], expected[key])
    assert record[key].dtype == expected[key].dtype
  for key, value in expected['objects'].items():
    np.testing.assert_array_equal(record['objects'][key], value)
  assert 'tensorflow' not in sys.modules


def test_synth_shapes_surface_points_and_occupancy(data_dir):
  builder = registry.get_builder('synth_shapes', data_dir, 'tiny')
  config = builder_config('tiny')
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  assert len(train) == 10 * config.scene.shapes_per_class_train
  assert len(test) == 10 * config.scene.shapes_per_class_test
  train_ids = {int(train[i]['shape_id']) for i in range(len(train))}
  test_ids = {int(test[i]['shape_id']) for i in range(len(test))}
  assert not train_ids & test_ids
  for i in range(0, len(train), 7):
    s = train[i]
    points, normals = s['surface']['points'], s['surface']['normals']
    assert points.shape == (config.surface_points, 3)
    assert np.all(np.abs(points) <= 0.5 + 1e-5)
    # The whole box is used: the shape touches all six faces of [−0.5, 0.5]³.
    np.testing.assert_allclose(np.abs(points).max(0), 0.5, atol=0.02)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1, atol=1e-5)
    # Stepping inward along −normal enters the solid, outward leaves it: checks samples,
    # normals and the occupancy labels' inside test against each other.
    parts = shape_bank.ShapeBank(0, config.scene.shapes_per_class_train,
                                 config.scene.shapes_per_class_test).shape(int(s['shape_id'])).parts
    assert raytrace.inside(parts, points - 2e-3 * normals).mean() > 0.95
    assert raytrace.inside(parts, points + 2e-3 * normals).mean() < 0.05
    inside = s['occupancy']['inside']
    np.testing.assert_array_equal(inside, raytrace.inside(parts, s['occupancy']['points']))
    assert 0.05 < inside.mean() < 0.95


def test_contact_sheet_shows_every_scene(data_dir):
  source = registry.get_builder('synth_rooms', data_dir, 'tiny').as_data_source('train')
  sheet = contact_sheet.contact_sheet([source[i] for i in range(3)], CLASSES)
  assert sheet.size == (4 * 256 + 3 * 4, 3 * 192 + 2 * 4)
  pixels = np.asarray(sheet)
  # The last tile of the first row differs from the image (boxes are drawn on it).
  assert not np.array_equal(pixels[:192, 3 * 260:3 * 260 + 256], source[0]['image'])


def _main(*args, **env):
  return subprocess.run([sys.executable, '-m', 'scenediff_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, **env}, timeout=600)


def test_main_builds_and_previews_the_smoke_config(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  workdir = tmp_path / 'work'
  result = _main('--config=configs/synthetic.py:smoke', f'--config.data_dir={data_dir}',
                 f'--workdir={workdir}', '--mode=build_data')
  assert result.returncode == 0, result.stderr[-3000:]
  assert os.path.getsize(workdir / 'previews' / 'data.png') > 10_000
  saved = json.loads((workdir / 'config.json').read_text())
  assert saved['data']['size'] == 'tiny' and saved['data_dir'] == data_dir
  for name in ('synth_rooms', 'synth_shapes'):
    assert registry.get_builder(name, data_dir, 'tiny').is_prepared()
  # A second run finds the data and only previews.
  again = _main('--config=configs/synthetic.py:smoke', f'--config.data_dir={data_dir}',
                f'--workdir={workdir}', '--mode=preview_data')
  assert again.returncode == 0 and 'already built' in again.stderr


def test_main_rejects_config_typos(tmp_path):
  result = _main('--config=configs/synthetic.py:smoke', '--config.data.sead=3',
                 f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'sead' in result.stderr
