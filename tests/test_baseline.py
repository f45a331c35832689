"""The trivial class-means baseline: priors, boxes on 2D box rays, its rows in the report."""
import copy
import json

import numpy as np
import pytest

from scenediff_jax import evaluation, geometry
from scenediff_jax.evaluation import baseline, report

K = geometry.intrinsics(211.8, 127.5, 95.5)
TILTED = geometry.world_to_cam(0.3, -0.08)  # pitch and roll: W and C differ


def _box(center, size, yaw):
  return np.r_[center, size, yaw].astype(np.float64)


def test_fit_priors_known_answers():
  chairs = [_box([1, 0, 3], [0.4, 0.8, 0.5], 3.1), _box([0, 0, 4], [0.6, 1.0, 0.7], -3.1)]
  tables = [_box([0, 0, 2], [1.2, 0.7, 0.8], 0.2), _box([0, 2, 0], [1.0, 0.7, 0.6], 0.4),
            _box([0, 0, 2], [0.8, 0.7, 1.0], 0.3)]
  # Two scenes, the classes interleaved across them; sofa (2) and every class above 3 unseen.
  classes = [np.array([1, 3]), np.array([3, 1, 3])]
  boxes = [np.stack([chairs[0], tables[0]]), np.stack([tables[1], chairs[1], tables[2]])]
  layouts = np.array([[0, -1, 2, 4, 3, 5, 3.0], [1, -1, 4, 6, 3, 7, -3.0]])
  p = baseline.fit_priors(classes, boxes, layouts)
  assert p.size.shape == (10, 3) and p.yaw.shape == (10,) and p.distance.shape == (10,)
  np.testing.assert_allclose(p.size[1], [0.5, 0.9, 0.6])
  np.testing.assert_allclose(p.size[3], [1.0, 0.7, 0.8])
  np.testing.assert_allclose(p.distance[1], (np.sqrt(10) + 4) / 2)
  np.testing.assert_allclose(p.distance[3], 2.0)
  np.testing.assert_allclose(p.yaw[3], 0.3, atol=1e-12)
  # Across the ±π wrap: 3.1 and −3.1 average to π (wrapped to −π), not to 0.
  assert abs(geometry.wrap_angle(p.yaw[1] - np.pi)) < 1e-9
  assert -np.pi <= p.yaw[1] < np.pi
  # Unseen classes get the mean over all five objects.
  everything = np.concatenate(boxes)
  for c in (0, 2, 4, 9):
    np.testing.assert_allclose(p.size[c], everything[:, 3:6].mean(0))
    np.testing.assert_allclose(p.distance[c], np.linalg.norm(everything[:, :3], axis=1).mean())
    np.testing.assert_allclose(p.yaw[c], np.arctan2(np.sin(everything[:, 6]).mean(),
                                                    np.cos(everything[:, 6]).mean()))
  assert np.all(np.isfinite(p.size)) and np.all(np.isfinite(p.yaw))
  # The layout: mean centre and size, circular-mean yaw (3 and −3 → ±π).
  np.testing.assert_allclose(p.layout[:6], [0.5, -1, 3, 5, 3, 6])
  assert abs(geometry.wrap_angle(p.layout[6] - np.pi)) < 1e-9


def test_fit_priors_rejects_what_it_cannot_fit():
  with pytest.raises(ValueError):
    baseline.fit_priors([np.array([10])], [np.zeros((1, 7))], np.zeros((1, 7)))
  with pytest.raises(ValueError):
    baseline.fit_priors([], [], np.zeros((1, 7)))


def _priors():
  rng = np.random.default_rng(0)
  return baseline.ClassPriors(size=rng.uniform(0.3, 2.0, (10, 3)),
                              yaw=rng.uniform(-np.pi, np.pi, 10),
                              distance=rng.uniform(1.5, 6.0, 10),
                              layout=np.array([0.2, -0.4, 3.0, 5.0, 2.8, 6.0, 0.1]))


@pytest.mark.parametrize('world_to_cam', [np.eye(3), TILTED], ids=['level', 'pitch_roll'])
def test_predicted_centre_is_on_the_2d_box_ray_at_the_prior_distance(world_to_cam):
  priors = _priors()
  classes = np.array([0, 3, 3, 9, 5])
  corner = np.array([[10, 20], [100, 40], [200, 150], [0, 0], [30, 160]], np.float64)
  bbox2d = np.concatenate([corner, corner + [[50, 30], [20, 80], [55, 40], [256, 192], [5, 5]]], 1)
  boxes = baseline.predict_boxes(priors, classes, bbox2d, K, world_to_cam)
  assert boxes.shape == (5, 7)
  pixels, z = geometry.project(boxes[:, :3], K, world_to_cam)
  np.testing.assert_allclose(pixels, 0.5 * (bbox2d[:, :2] + bbox2d[:, 2:]), atol=1e-9)
  assert np.all(z > 0)
  np.testing.assert_allclose(np.linalg.norm(boxes[:, :3], axis=1), priors.distance[classes])
  np.testing.assert_array_equal(boxes[:, 3:6], priors.size[classes])
  np.testing.assert_array_equal(boxes[:, 6], priors.yaw[classes])
  assert baseline.predict_boxes(priors, np.zeros(0, int), np.zeros((0, 4)), K,
                                world_to_cam).shape == (0, 7)


def test_json_round_trip():
  priors = _priors()
  back = baseline.ClassPriors.from_json(priors.to_json())
  for field in ('size', 'yaw', 'distance', 'layout'):
    np.testing.assert_array_equal(getattr(back, field), getattr(priors, field))
    assert getattr(back, field).dtype == np.float64


# Per class: size, yaw and distance every object of that class is given below.
SIZE = np.array([[1.8, 0.6, 2.0], [0.5, 0.9, 0.5], [1.9, 0.8, 0.9], [1.2, 0.7, 0.8],
                 [1.3, 0.75, 0.6], [1.0, 1.1, 0.5], [0.5, 0.6, 0.4], [0.6, 0.3, 0.5],
                 [0.8, 1.6, 0.45], [0.35, 1.4, 0.35]])
YAW = np.linspace(-np.pi, 3.0, 10)  # −π itself: the wrap must not break equality
DISTANCE = np.linspace(2.0, 5.0, 10)
LAYOUT = np.array([0.3, -1.2, 2.5, 5.0, 2.7, 6.0, 0.2])


def _truth_is_the_prior(record):
  """A SynthRooms record whose objects are their class's prior: same direction from the
  camera, the class's size, yaw and distance, the 2D box moved onto the centre's projection."""
  objects = record['objects']
  c = np.asarray(objects['class'], int)
  center = objects['box3d'][:, :3]
  direction = center / np.linalg.norm(center, axis=1, keepdims=True)
  boxes = np.concatenate([direction * DISTANCE[c, None], SIZE[c], YAW[c, None]], 1)
  pixels, _ = geometry.project(boxes[:, :3], record['K'], record['world_to_cam'])
  shift = pixels - 0.5 * (objects['bbox2d'][:, :2] + objects['bbox2d'][:, 2:])
  bbox2d = objects['bbox2d'] + np.tile(shift, 2)
  return {**record, 'layout': LAYOUT, 'objects': {**objects, 'box3d': boxes, 'bbox2d': bbox2d}}


def _predict(priors, record):
  return baseline.predict_scene(priors, record['objects']['class'], record['objects']['bbox2d'],
                                record['K'], record['world_to_cam'])


def _ground_truth(record):
  return {'objects': {k: record['objects'][k] for k in ('class', 'box3d')},
          'layout': np.asarray(record['layout'], np.float64)}


def test_baseline_is_perfect_where_the_truth_is_the_prior(scenes):
  train, test = scenes[:16], scenes[16:]
  assert not np.isin(np.concatenate([r['objects']['class'] for r in test]),
                     np.concatenate([r['objects']['class'] for r in train]), invert=True).any()
  train, test = [_truth_is_the_prior(r) for r in train], [_truth_is_the_prior(r) for r in test]
  priors = baseline.fit_priors([r['objects']['class'] for r in train],
                               [r['objects']['box3d'] for r in train],
                               np.stack([r['layout'] for r in train]))
  predictions = [_predict(priors, r) for r in test]
  assert set(predictions[0]['objects']) == {'class', 'box3d', 'score'}
  np.testing.assert_array_equal(predictions[0]['objects']['score'], 1.0)
  m = evaluation.evaluate([_ground_truth(r) for r in test], predictions)
  # Records store world_to_cam in float32, orthonormal to ~1e-7 only.
  assert m['iou3d_mean'] == pytest.approx(100, abs=1e-3)
  assert m['ap3d_15'] == pytest.approx(100)
  assert m['layout_iou'] == pytest.approx(100, abs=1e-3)


def test_baseline_on_synthrooms_is_far_from_perfect(scenes):
  train, test = scenes[:16], scenes[16:]
  priors = baseline.fit_priors([r['objects']['class'] for r in train],
                               [r['objects']['box3d'] for r in train],
                               np.stack([r['layout'] for r in train]))
  m = evaluation.evaluate([_ground_truth(r) for r in test], [_predict(priors, r) for r in test])
  assert 0 < m['iou3d_mean'] < 60 and 0 < m['layout_iou'] < 100


def _metrics(offset, **extra):
  """A metrics dict in the evaluator's format, numbers made up (AP of sink missing)."""
  per_class = {c: {'ap3d_15': None if c == 'sink' else offset + i, 'iou3d_mean': offset + 0.5 * i,
                   'shape_cd': None, 'shape_fscore': None, 'num_objects': i}
               for i, c in enumerate(geometry.CLASSES)}
  return {'ap3d_15': offset + 4.25, 'iou3d_mean': offset + 2.125, 'layout_iou': offset + 30,
          'l_align': None, 'shape_cd': None, 'shape_fscore': None, 'per_class': per_class,
          'num_scenes': 6, 'num_objects': 45, 'iou_threshold': 0.15, **extra}


# report.markdown(_metrics(40, config='synthetic')) as written before baselines existed.
OLD_REPORT = '''\
# Evaluation

6 scenes, 45 objects (config synthetic).

## Table 1: scene reconstruction

| method | IoU3D ↑ | AP3D@15 ↑ | L_align ↓ | CD (×10³) ↓ | F-score ↑ | layout IoU ↑ |
|---|---|---|---|---|---|---|
| **this run** | 42.12 | 44.25 | — | — | — | 70.00 |
| Total3D (published, real data) | 20.52 | 30.56 | 1.35 | 44.32 | 36.20 | 59.20 |
| Im3D (published, real data) | 28.31 | 46.14 | 1.24 | 51.31 | 21.45 | 64.40 |
| InstPIFu (published, real data) | 26.14 | 45.02 | 1.19 | 24.65 | 45.28 | — |
| paper (published, real data) | 36.10 | 58.18 | 0.99 | 15.05 | 58.71 | 66.10 |

## Table 4: AP3D@15 per class

| | bed | chair | sofa | table | desk | dresser | nightstand | sink | cabinet | lamp | mean |
|---|---|---|---|---|---|---|---|---|---|---|---|
| **this run** | 40.00 | 41.00 | 42.00 | 43.00 | 44.00 | 45.00 | 46.00 | — | 48.00 | 49.00 | 44.25 |
| paper (published, real data) | 86.58 | 58.68 | 74.13 | 71.36 | 62.81 | 55.76 | 48.14 | 50.44 | 52.09 | 21.82 | 58.18 |

## Per class

| class | objects | AP3D@15 | IoU3D | CD (×10³) | F-score |
|---|---|---|---|---|---|
| bed | 0 | 40.00 | 40.00 | — | — |
| chair | 1 | 41.00 | 40.50 | — | — |
| sofa | 2 | 42.00 | 41.00 | — | — |
| table | 3 | 43.00 | 41.50 | — | — |
| desk | 4 | 44.00 | 42.00 | — | — |
| dresser | 5 | 45.00 | 42.50 | — | — |
| nightstand | 6 | 46.00 | 43.00 | — | — |
| sink | 7 | — | 43.50 | — | — |
| cabinet | 8 | 48.00 | 44.00 | — | — |
| lamp | 9 | 49.00 | 44.50 | — | — |

AP: VOC all-point interpolation, greedy matching by confidence; classes without ground truth are left out of the mean. IoU3D: each prediction with its own object. L_align: metres², depth → reconstruction.
'''  # noqa: E501 (the report's exact text: its table rows and footnote are single lines)
TRIVIAL = 'trivial baseline (class means)'


def test_report_without_baselines_is_unchanged(tmp_path):
  metrics = _metrics(40, config='synthetic')
  assert report.markdown(metrics) == OLD_REPORT
  assert report.markdown(metrics, baselines={}) == OLD_REPORT
  report.write(metrics, str(tmp_path))
  assert (tmp_path / 'report.md').read_text() == OLD_REPORT + '\n'
  assert json.loads((tmp_path / 'metrics.json').read_text()) == json.loads(json.dumps(metrics))


def test_report_with_a_baseline(tmp_path):
  metrics, trivial = _metrics(40, config='synthetic'), _metrics(10, num_scenes=6)
  before = copy.deepcopy((metrics, trivial))
  report.write(metrics, str(tmp_path), baselines={TRIVIAL: trivial})
  assert (metrics, trivial) == before  # the caller's dicts are left alone
  lines = (tmp_path / 'report.md').read_text().split('\n')
  row1 = f'| {TRIVIAL} | 12.12 | 14.25 | — | — | — | 40.00 |'
  row4 = (f'| {TRIVIAL} | 10.00 | 11.00 | 12.00 | 13.00 | 14.00 | 15.00 | 16.00 | — | 18.00 | '
          '19.00 | 14.25 |')
  # Each right below this run's row of its table; only these two rows were added.
  assert lines[lines.index(row1) - 1].startswith('| **this run** | 42.12 |')
  assert lines[lines.index(row4) - 1].startswith('| **this run** | 40.00 |')
  assert [l for l in lines if l not in (row1, row4)] == (OLD_REPORT + '\n').split('\n')
  saved = json.loads((tmp_path / 'metrics.json').read_text())
  assert {k: v for k, v in saved.items() if k != 'baselines'} == json.loads(json.dumps(metrics))
  per_class = {c: {'ap3d_15': None if c == 'sink' else 10 + i, 'iou3d_mean': 10 + 0.5 * i}
               for i, c in enumerate(geometry.CLASSES)}
  assert saved['baselines'] == {TRIVIAL: {
      'ap3d_15': 14.25, 'iou3d_mean': 12.125, 'layout_iou': 40, 'l_align': None,
      'shape_cd': None, 'shape_fscore': None, 'per_class': per_class}}
