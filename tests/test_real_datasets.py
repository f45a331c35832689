"""The SUN RGB-D and Pix3D builders on tiny data in the exact real formats (tests/real_format.py
writes it with the sources' conventions): records decode, converted boxes have the sources'
corners, depth inside masks falls in its box, shapes and splits are right, and the main job
says what is missing or trains on the data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from data_pipelines import registry
from data_pipelines.pix3d import builder as pix3d_builder
from data_pipelines.pix3d import convert as pix3d_convert
from data_pipelines.sunrgbd import convert as sunrgbd_convert
from scenediff_jax.geometry import CLASSES, boxes, camera
from scenediff_jax.geometry.normalization import ShapeLatents
from tests import real_format

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def sunrgbd_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('sunrgbd'))
  return root, real_format.write_sunrgbd(root)


@pytest.fixture(scope='module')
def pix3d_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('pix3d'))
  return root, real_format.write_pix3d(root)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory, sunrgbd_dir, pix3d_dir):
  d = str(tmp_path_factory.mktemp('tfds'))
  registry.build('sunrgbd', d, manual_dir=sunrgbd_dir[0])
  registry.build('pix3d', d, manual_dir=pix3d_dir[0])
  registry.build('pix3d_shapes', d, manual_dir=pix3d_dir[0])
  return d


def _corner_set_distance(a, b):
  """Largest distance from a corner of a to the nearest corner of b (order-free)."""
  return np.linalg.norm(a[:, None] - b[None], axis=-1).min(1).max()


def test_sunrgbd_records_have_the_sources_corners_and_depth_in_their_boxes(sunrgbd_dir, data_dir):
  _, written = sunrgbd_dir
  builder = registry.get_builder('sunrgbd', data_dir)
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  # Scene 3 has only a door (not one of our classes): skipped. 5051 comes with its mirror.
  assert (len(train), len(test)) == (3, 1)
  records = [train[i] for i in range(3)] + [test[0]]
  names = {(int(r['scene_id']), bool(r['flipped'])): r for r in records}
  assert set(names) == {(1, False), (5051, False), (5051, True), (2, False)}
  for (scene_id, flipped), record in names.items():
    source = written[f'{scene_id}_flip.pkl' if flipped else f'{scene_id}.pkl']
    assert record['image'].shape == (240, 320, 3) and record['depth'].shape == (240, 320)
    kept = [k for k, c in enumerate(source['boxes']['size_cls'])
            if c != real_format.NYU['door']]
    names_kept = [real_format.SUNRGBD_SCENES[scene_id][k][0] for k in kept]
    assert [CLASSES[c] for c in record['objects']['class']] == [
        n.replace('night_stand', 'nightstand') for n in names_kept]
    np.testing.assert_array_equal(record['objects']['shape_id'], -1)
    # The 8 corners of every converted box are the source's bdb3D corners (in our frame).
    to_ours = lambda corners: np.asarray(corners) @ sunrgbd_convert.TUR_TO_OURS.T
    for j, k in enumerate(kept):
      ours = boxes.box_corners(record['objects']['box3d'][j].astype(np.float64))
      assert _corner_set_distance(ours, to_ours(source['boxes']['bdb3D'][k])) < 1e-5
    layout = boxes.box_corners(record['layout'].astype(np.float64))
    assert _corner_set_distance(layout, to_ours(source['layout']['bdb3D'])) < 1e-5
    # The front is kept: our box's −z axis is the source's front row (mirrored for flips).
    for j, k in enumerate(kept):
      _, _, theta, _ = real_format.SUNRGBD_SCENES[scene_id][k]
      front = sunrgbd_convert.TUR_TO_OURS @ real_format.object_basis(theta)[2]
      if flipped:
        front[0] = -front[0]  # their right axis is our x
      yaw = record['objects']['box3d'][j, 6]
      np.testing.assert_allclose(-boxes.rotation_y(np.float64(yaw))[:, 2], front, atol=1e-5)
    # Depth points inside each mask lie on their own box (within resampling error).
    for j in range(len(kept)):
      points = camera.depth_to_points(record['depth'], record['K'], record['world_to_cam'],
                                      record['instances'] == j)
      assert len(points) > 50
      box = record['objects']['box3d'][j].astype(np.float64)
      assert boxes.points_in_box(points, box, inflate=0.05).mean() > 0.95
      others = [boxes.points_in_box(points, b.astype(np.float64)).mean()
                for i, b in enumerate(record['objects']['box3d']) if i != j]
      assert max(others, default=0) < 0.05
    # The camera is exact: pitch and roll as the bins say, and box centres project where
    # the source's camera puts them.
    cam_to_world = real_format.total3d_camera_to_world(
        sunrgbd_convert.from_bins(real_format.PITCH_BINS, source['camera']['pitch_cls'],
                                  source['camera']['pitch_reg']),
        sunrgbd_convert.from_bins(real_format.ROLL_BINS, source['camera']['roll_cls'],
                                  source['camera']['roll_reg']))
    centre_tur = np.mean(source['boxes']['bdb3D'][kept[0]], 0) @ cam_to_world  # world → camera
    centre_cv = np.array([centre_tur[2], -centre_tur[1], centre_tur[0]])
    K_source = np.asarray(source['camera']['K'], np.float64).copy()
    if flipped:
      K_source[0, 2] -= 1  # Total3D's mirrored K is one pixel off (convert.flipped_intrinsics)
    expected = (K_source @ centre_cv)[:2] / centre_cv[2]
    expected = (expected + 0.5) * [320 / 160, 240 / 120] - 0.5
    uv, _ = camera.project(record['objects']['box3d'][0, :3].astype(np.float64),
                           record['K'].astype(np.float64),
                           record['world_to_cam'].astype(np.float64))
    np.testing.assert_allclose(uv, expected, atol=1e-3)
  assert 'tensorflow' not in sys.modules


def _model_corners_in_world(entry, mesh, world_to_cam):
  """Pix3D's route: the model's bounding-box corners posed by rot_mat/trans_mat, OpenCV axes."""
  lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
  corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                      for z in (lo[2], hi[2])])
  in_camera = corners @ np.asarray(entry['rot_mat']).T + entry['trans_mat']
  return (in_camera * [-1, -1, 1]) @ world_to_cam  # R_wcᵀ applied to rows


def test_pix3d_boxes_are_the_posed_models_bounding_boxes(pix3d_dir, data_dir):
  root, (entries, meshes) = pix3d_dir
  builder = registry.get_builder('pix3d', data_dir)
  train, test = builder.as_data_source('train'), builder.as_data_source('test')
  records = [train[i] for i in range(len(train))] + [test[i] for i in range(len(test))]
  assert len(records) == 4  # the misc photo has no class of ours
  for record in records:
    entry = entries[int(record['scene_id'])]
    assert CLASSES[int(record['objects']['class'][0])] == pix3d_convert.CATEGORY_TO_CLASS[
        entry['category']]
    R_wc = record['world_to_cam'].astype(np.float64)
    box = record['objects']['box3d'][0].astype(np.float64)
    expected = _model_corners_in_world(entry, meshes[entry['model']], R_wc)
    assert _corner_set_distance(boxes.box_corners(box), expected) < 1e-5
    # The world is gravity-aligned: the model's up axis is world up (−y).
    up = (np.asarray(entry['rot_mat']) @ [0, 1, 0]) * [-1, -1, 1] @ R_wc
    np.testing.assert_allclose(up, [0, -1, 0], atol=1e-6)
    # K: model vertices project where Pix3D's camera puts them, in the resized photo.
    w, h = entry['img_size']
    vertices = np.asarray(meshes[entry['model']].vertices)
    pix3d_pixels = real_format.pix3d_project(vertices, entry['rot_mat'], entry['trans_mat'],
                                             entry['focal_length'], w, h)  # centres at +0.5
    expected_uv = pix3d_pixels * [256 / w, 256 / h] - 0.5
    world = ((vertices @ np.asarray(entry['rot_mat']).T + entry['trans_mat']) * [-1, -1, 1]) @ R_wc
    uv, _ = camera.project(world, record['K'].astype(np.float64), R_wc)
    np.testing.assert_allclose(uv, expected_uv, atol=1e-3)
    # The mask is the object's instance, inside its 2D box; no depth, no layout.
    rows, cols = np.nonzero(record['instances'] == 0)
    x1, y1, x2, y2 = record['objects']['bbox2d'][0]
    assert len(rows) > 100 and cols.min() >= x1 - 1 and cols.max() <= x2 + 1
    assert rows.min() >= y1 - 1 and rows.max() <= y2 + 1
    assert not record['depth'].any() and not record['layout'].any()


def test_pix3d_split_by_model_shares_no_model(pix3d_dir, data_dir):
  root, (entries, _) = pix3d_dir
  train = {entries[e['index']]['model'] for e in pix3d_builder.split_entries(root, 'train')}
  test = {entries[e['index']]['model'] for e in pix3d_builder.split_entries(root, 'test')}
  assert train and test and not train & test
  shapes = registry.get_builder('pix3d_shapes', data_dir)
  ids = {s: {int(shapes.as_data_source(s)[i]['shape_id'])
             for i in range(len(shapes.as_data_source(s)))} for s in ('train', 'test')}
  model_ids = pix3d_builder.model_ids(pix3d_builder.read_entries(root))
  assert ids == {s: {model_ids[m] for m in models}
                 for s, models in (('train', train), ('test', test))}


def test_pix3d_user_split_files_are_followed(tmp_path, pix3d_dir):
  root, (entries, _) = pix3d_dir
  os.makedirs(tmp_path / 'splits')
  for name in ('pix3d.json', 'img', 'mask', 'model'):
    os.symlink(os.path.join(root, name), tmp_path / name)
  # InstPIFu/SSR-style rows and Total3D-style pickle paths both name photos.
  (tmp_path / 'splits' / 'train.json').write_text(json.dumps(
      [[entries[0]['img'], '255', 'chair'], './data/pix3d/train_test_data/2.pkl']))
  (tmp_path / 'splits' / 'test.json').write_text(json.dumps([entries[1]['img'], entries[3]['img']]))
  assert [e['index'] for e in pix3d_builder.split_entries(str(tmp_path), 'train')] == [0, 2]
  assert [e['index'] for e in pix3d_builder.split_entries(str(tmp_path), 'test')] == [1]


def test_pix3d_shapes_are_canonical_with_occupancy_exact_off_the_surface(pix3d_dir, data_dir):
  root, (entries, meshes) = pix3d_dir
  shapes = registry.get_builder('pix3d_shapes', data_dir)
  paths = sorted(pix3d_builder.model_ids(pix3d_builder.read_entries(root)))
  voxel = 1.0 / pix3d_builder.VOXELS
  for split in ('train', 'test'):
    source = shapes.as_data_source(split)
    for i in range(len(source)):
      shape = source[i]
      points = shape['surface']['points']
      # Scaled into its own box: touches all six faces of [−0.5, 0.5]³.
      np.testing.assert_allclose(np.abs(points).max(0), 0.5, atol=0.02)
      assert np.abs(points).max() <= 0.5 + 1e-5
      # The canonical frame is y down with the front at −z: the model's chamfered back-top
      # edge (Pix3D +z, +y) is ours at +z, −y, where the convex model has no surface.
      assert not np.any((points[:, 2] > 0.45) & (points[:, 1] < -0.45))
      # Occupancy against the exact convex solid: wrong only within a voxel of the surface.
      canonical = pix3d_convert.canonical_vertices(meshes[paths[int(shape['shape_id'])]].vertices)
      hull = ConvexHull(canonical)
      signed = (shape['occupancy']['points'] @ hull.equations[:, :3].T
                + hull.equations[:, 3]).max(1)  # > 0 outside, < 0 inside
      inside = shape['occupancy']['inside']
      wrong = inside != (signed < 0)
      assert wrong.mean() < 0.1 and np.all(np.abs(signed[wrong]) < 1.8 * voxel)
      assert 0.2 < inside.mean() < 0.9


def _main(*args, **env):
  return subprocess.run([sys.executable, '-m', 'scenediff_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, env={**os.environ, **env}, timeout=900)


def test_main_without_sunrgbd_exits_2_with_instructions_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'work'
  result = _main('--config=configs/sunrgbd.py', f'--workdir={workdir}',
                 f'--config.data_dir={tmp_path / "tfds"}',
                 f'--config.data.manual_dir={tmp_path / "nowhere"}')
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'sunrgbd_train_test_data/<id>.pkl' in result.stderr
  assert 'splits/train.json' in result.stderr
  assert not workdir.exists() and not (tmp_path / 'tfds').exists()


@pytest.mark.slow
def test_main_trains_and_evaluates_on_tiny_real_format_data(tmp_path, sunrgbd_dir, pix3d_dir):
  workdir = tmp_path / 'work'
  result = _main('--config=configs/sunrgbd.py:smoke', f'--workdir={workdir}',
                 f'--config.data_dir={tmp_path / "tfds"}',
                 f'--config.data.manual_dir={sunrgbd_dir[0]}',
                 f'--config.data.shape_manual_dir={pix3d_dir[0]}',
                 '--config.training.diffusion_steps=4', '--config.training.joint_steps=2',
                 '--config.shape_training.steps=4', '--config.eval.num_previews=1')
  assert result.returncode == 0, result.stderr[-4000:]
  lines = [json.loads(l) for l in (workdir / 'logs' / 'metrics.jsonl').read_text().splitlines()]
  assert any(l.get('l_align', 0) > 0 for l in lines), lines[-3:]
  metrics = json.loads((workdir / 'eval' / 'metrics.json').read_text())
  assert metrics['num_scenes'] == 1 and metrics['layout_iou'] is not None
  assert metrics['shape_cd'] is None  # SUN RGB-D has no shape ground truth to compare with


def test_scenes_without_a_layout_train_and_score_without_one(pix3d_dir, data_dir):
  """Pix3D's all-zero layout: no layout statistics, loss weight, metric or baseline prior."""
  from scenediff_jax.evaluation import baseline, evaluator
  from scenediff_jax.training import scene_data
  source = registry.get_builder('pix3d', data_dir).as_data_source('train')
  latents = ShapeLatents(
      shape_ids=np.arange(3), gaussians=np.zeros((3, 2, 16), np.float32),
      intrinsics=np.zeros((3, 2, 4), np.float32), is_train=np.ones(3, bool))
  statistics = scene_data.compute_scene_statistics(source, 10, latents)
  np.testing.assert_array_equal(statistics.layout.scale, 1)
  example = scene_data.prepare_scene(source[0], statistics, latents, 1, 8, np.random.default_rng(0))
  assert not example['layout_mask'] and example['mask'].all()
  priors = baseline.fit_priors([source[0]['objects']['class']], [source[0]['objects']['box3d']],
                               np.stack([source[0]['layout']]))
  np.testing.assert_array_equal(priors.layout, 0)
  truth = [{'objects': {'class': source[0]['objects']['class'],
                        'box3d': source[0]['objects']['box3d']}, 'layout': source[0]['layout']}]
  metrics = evaluator.evaluate(truth, truth)
  assert metrics['layout_iou'] is None and metrics['iou3d_mean'] == pytest.approx(100)
