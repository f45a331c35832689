"""Metrics against independent references and hand-made cases with known answers."""
import dataclasses
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree
import trimesh

from scenediff_jax import evaluation, geometry
from scenediff_jax.evaluation import report, shape_metrics

RNG = np.random.default_rng(0)


def random_box(center_scale=0.6):
  return np.r_[RNG.uniform(-center_scale, center_scale, 3), RNG.uniform(0.3, 2.0, 3),
               RNG.uniform(-np.pi, np.pi)]


def monte_carlo_iou(a, b, n=600_000):
  corners = np.concatenate([geometry.box_corners(a), geometry.box_corners(b)])
  lo, hi = corners.min(0), corners.max(0)
  p = RNG.uniform(lo, hi, (n, 3))
  ia, ib = geometry.points_in_box(p, a), geometry.points_in_box(p, b)
  return (ia & ib).sum() / max((ia | ib).sum(), 1)


def test_box_iou_against_monte_carlo():
  pairs = [(random_box(), random_box()) for _ in range(12)]
  iou = evaluation.box_iou_3d(np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
  reference = np.array([monte_carlo_iou(a, b) for a, b in pairs])
  assert np.sum(reference > 0.02) >= 8  # most cases overlap substantially
  np.testing.assert_allclose(iou, reference, atol=0.01)


def test_box_iou_known_cases_and_invariances():
  a = np.stack([random_box() for _ in range(20)])
  b = np.stack([random_box() for _ in range(20)])
  np.testing.assert_allclose(evaluation.box_iou_3d(a, a), 1.0, atol=1e-9)
  np.testing.assert_allclose(evaluation.box_iou_3d(a, b), evaluation.box_iou_3d(b, a), atol=1e-9)
  far = a.copy()
  far[:, 0] += 10
  np.testing.assert_array_equal(evaluation.box_iou_3d(a, far), 0.0)
  above = a.copy()
  above[:, 1] -= a[:, 4] + 0.01  # stacked vertically: footprints overlap, volumes do not
  np.testing.assert_array_equal(evaluation.box_iou_3d(a, above), 0.0)
  # A common yaw rotation and translation of both boxes changes nothing.
  yaw, t = 0.9, np.array([1.0, -0.3, 2.0])
  moved = lambda x: geometry.transform_boxes(x, yaw, t)
  np.testing.assert_allclose(evaluation.box_iou_3d(moved(a), moved(b)),
                             evaluation.box_iou_3d(a, b), atol=1e-9)
  # Yaw ± π describes the same box.
  flipped = b.copy()
  flipped[:, 6] = geometry.wrap_angle(b[:, 6] + np.pi)
  np.testing.assert_allclose(evaluation.box_iou_3d(a, flipped), evaluation.box_iou_3d(a, b),
                             atol=1e-9)
  # Known answer: a unit cube and the same cube shifted by half its width: 0.5 / 1.5.
  cube = np.array([[0, 0, 0, 1, 1, 1, 0.0]])
  half = np.array([[0.5, 0, 0, 1, 1, 1, 0.0]])
  np.testing.assert_allclose(evaluation.box_iou_3d(cube, half), 1 / 3, atol=1e-12)
  # And a square turned by 45° inside a bigger one: area 2 inside 4 (both 1 m tall).
  big = np.array([[0, 0, 0, 2, 1, 2, 0.0]])
  diamond = np.array([[0, 0, 0, np.sqrt(2), 1, np.sqrt(2), np.pi / 4]])
  np.testing.assert_allclose(evaluation.box_iou_3d(big, diamond), 0.5, atol=1e-9)


def _scene(classes, boxes, scores=None):
  objects = {'class': np.asarray(classes), 'box3d': np.asarray(boxes, float).reshape(-1, 7)}
  if scores is not None:
    objects['score'] = np.asarray(scores, float)
  return objects


BOX = np.array([0, 0, 3, 1, 1, 1, 0.0])
OFF = np.array([5, 0, 3, 1, 1, 1, 0.0])  # misses BOX


def test_ap_known_answers():
  ap = evaluation.average_precision
  gt = [_scene([0, 0], [BOX, BOX + [0, 0, 2, 0, 0, 0, 0]])]
  # All correct.
  assert ap(gt, [_scene([0, 0], gt[0]['box3d'], [0.9, 0.8])], 0) == pytest.approx(1.0)
  # All missed.
  assert ap(gt, [_scene([0, 0], [OFF, OFF], [0.9, 0.8])], 0) == 0.0
  # Half right, the right one ranked first: P = 1 at R = 0.5, then nothing: AP = 0.5.
  assert ap(gt, [_scene([0, 0], [BOX, OFF], [0.9, 0.8])], 0) == pytest.approx(0.5)
  # Half right, the right one ranked last: precision 1/2 at recall 1/2: AP = 0.25.
  assert ap(gt, [_scene([0, 0], [BOX, OFF], [0.1, 0.8])], 0) == pytest.approx(0.25)
  # A duplicate detection of a matched object is a false positive.
  dup = [_scene([0, 0, 0], [BOX, BOX, gt[0]['box3d'][1]], [0.9, 0.8, 0.7])]
  # TP, FP, TP → precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1 then 2/3.
  assert ap(gt, dup, 0) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
  # A class with no ground truth has no AP, and predictions of another class do not count.
  assert np.isnan(ap(gt, [_scene([1], [BOX], [0.9])], 1))
  assert ap(gt, [_scene([1, 0], [BOX, BOX], [0.9, 0.5])], 0) == pytest.approx(0.5)
  # Matching stays within a scene.
  two = [gt[0], _scene([], np.zeros((0, 7)))]
  assert ap(two, [_scene([], np.zeros((0, 7)), []), _scene([0], [BOX], [0.9])], 0) == 0.0


def test_voc_ap_is_area_under_the_precision_envelope():
  assert evaluation.voc_ap(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == pytest.approx(1.0)
  assert evaluation.voc_ap(np.array([0.25, 0.5]), np.array([1.0, 0.5])) == pytest.approx(0.375)


def _reference_metrics(pred, gt, tau, squared):
  d_pred = cKDTree(gt).query(pred)[0]
  d_gt = cKDTree(pred).query(gt)[0]
  chamfer = (np.mean(d_pred ** 2) + np.mean(d_gt ** 2)) * 1e3
  f = lambda d: d ** 2 if squared else d
  p, r = 100 * np.mean(f(d_pred) <= tau), 100 * np.mean(f(d_gt) <= tau)
  return chamfer, 2 * p * r / (p + r + 1e-9)


def test_chamfer_and_fscore_against_kdtree():
  gt = RNG.uniform(-0.5, 0.5, (3000, 3))
  pred = gt[:2500] + RNG.normal(0, 0.03, (2500, 3))
  none = shape_metrics.ShapeMetricOptions(normalization='none', alignment='none')
  cd, f = evaluation.chamfer_and_fscore(pred, gt, none)
  ref_cd, ref_f = _reference_metrics(pred, gt, 0.002, True)
  assert cd == pytest.approx(ref_cd, rel=1e-4) and f == pytest.approx(ref_f, abs=0.05)
  # OccNet: τ is 1% of the GT's extent, on distances (after bbox normalisation, extent 1).
  cd, f = evaluation.chamfer_and_fscore(pred, gt, evaluation.OCCNET)
  npred, ngt = shape_metrics.normalize_to_bbox(pred), shape_metrics.normalize_to_bbox(gt)
  ref_cd, ref_f = _reference_metrics(npred, ngt, 0.01, False)
  assert cd == pytest.approx(ref_cd, rel=1e-4) and f == pytest.approx(ref_f, abs=0.05)


def _instpifu_reference(pred_canonical, gt_canonical, size):
  """InstPIFu's evaluate_object_reconstruction.py without its mshalign step, written as they
  do: their normalised cube spans [−1, 1] (ours [−0.5, 0.5]), vertices / 2 · size / max(size)
  · 2, then scipy KD-tree distances, F at dist² ≤ 0.002 and CD = mean d₁² + mean d₂²."""
  stretch = lambda p: (2 * p) / 2 * size / np.max(size) * 2
  pred, gt = stretch(pred_canonical), stretch(gt_canonical)
  d12, d21 = cKDTree(gt).query(pred)[0], cKDTree(pred).query(gt)[0]
  p, r = 100 * np.mean(d12 ** 2 <= 0.002), 100 * np.mean(d21 ** 2 <= 0.002)
  return (np.mean(d12 ** 2) + np.mean(d21 ** 2)) * 1e3, 2 * p * r / (p + r + 1e-9)


def test_instpifu_convention_is_their_arithmetic_on_the_same_points():
  size = np.array([1.6, 0.45, 0.8])  # a table-like box: proportions matter
  gt = RNG.uniform(-0.5, 0.5, (3000, 3))
  pred = gt[:2500] + RNG.normal(0, 0.02, (2500, 3))
  unaligned = dataclasses.replace(evaluation.INSTPIFU, alignment='none')
  cd, f = evaluation.chamfer_and_fscore(pred, gt, unaligned, size=size)
  ref_cd, ref_f = _instpifu_reference(pred, gt, size)
  assert cd == pytest.approx(ref_cd, rel=1e-4) and f == pytest.approx(ref_f, abs=0.05)
  with pytest.raises(ValueError, match='size'):
    evaluation.chamfer_and_fscore(pred, gt, unaligned)


def test_instpifu_scale_is_twice_the_unit_box_in_distance():
  """Known answers on a grid (spacing 0.25 ≫ the offsets, so each point's nearest neighbour
  is its own copy): an offset d along an axis is d · 2 · size_axis / max(size) in the
  InstPIFu frame. √0.002 ≈ 0.0447: 0.03 passes τ in the unit box and fails it at twice the
  scale, and only along the box's longest axis."""
  grid = np.stack(np.meshgrid(*[np.linspace(-0.5, 0.5, 5)] * 3, indexing='ij'), -1).reshape(-1, 3)
  size = np.array([2.0, 1.0, 1.0])
  plain = shape_metrics.ShapeMetricOptions(normalization='none', alignment='none')
  unaligned = dataclasses.replace(evaluation.INSTPIFU, alignment='none')
  along_x, along_y = grid + [0.03, 0, 0], grid + [0, 0.03, 0]
  cd_plain, f_plain = evaluation.chamfer_and_fscore(along_x, grid, plain)
  cd_x, f_x = evaluation.chamfer_and_fscore(along_x, grid, unaligned, size=size)
  cd_y, f_y = evaluation.chamfer_and_fscore(along_y, grid, unaligned, size=size)
  assert f_plain == pytest.approx(100) and cd_plain == pytest.approx(2 * 0.03 ** 2 * 1e3)
  assert f_x == 0 and cd_x == pytest.approx(4 * cd_plain)  # (0.03 · 2 · 2/2)²
  assert f_y == pytest.approx(100) and cd_y == pytest.approx(cd_plain)  # 0.03 · 2 · 1/2


def test_similarity_alignment_undoes_a_similarity_and_nothing_else():
  gt = trimesh.sample.sample_surface(trimesh.creation.annulus(0.2, 0.5, 0.3), 10_000,
                                     seed=np.random.default_rng(0))[0]
  angle = np.deg2rad(6)
  rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                       [-np.sin(angle), 0, np.cos(angle)]])
  moved = 1.1 * gt @ rotation.T + [0.05, -0.03, 0.02]
  size = np.ones(3)
  aligned_cd, aligned_f = evaluation.chamfer_and_fscore(moved, gt, evaluation.INSTPIFU, size=size)
  _, rigid_f = evaluation.chamfer_and_fscore(
      moved, gt, dataclasses.replace(evaluation.INSTPIFU, alignment='rigid'), size=size)
  _, raw_f = evaluation.chamfer_and_fscore(
      moved, gt, dataclasses.replace(evaluation.INSTPIFU, alignment='none'), size=size)
  assert aligned_f > 99 and aligned_cd < 0.05
  assert raw_f < 50 and rigid_f < aligned_f - 30  # a rigid fit cannot undo the scale
  # A different shape stays different: alignment does not make a box fit a ball.
  ball = trimesh.sample.sample_surface(trimesh.creation.icosphere(3, 0.5), 10_000,
                                       seed=np.random.default_rng(1))[0]
  box = trimesh.sample.sample_surface(trimesh.creation.box((1, 1, 1)), 10_000,
                                      seed=np.random.default_rng(2))[0]
  assert evaluation.chamfer_and_fscore(ball, box, evaluation.INSTPIFU, size=size)[1] < 60


def test_an_empty_predicted_mesh_scores_as_its_box_centre():
  """A decoded field with no surface gives a mesh without faces: scored, not a crash."""
  gt = trimesh.creation.box((1, 1, 1))  # the canonical box
  size = np.array([0.6, 0.4, 0.8])
  empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))
  cd, f = evaluation.mesh_metrics(empty, gt, size=size)
  points = shape_metrics.to_gt_box(trimesh.sample.sample_surface(
      gt, 10_000, seed=np.random.default_rng(0))[0], size)
  # One point at the centre: both directions of the Chamfer sum are the GT's mean squared
  # distance to it (the first term, the centre's to the GT, is its nearest point's).
  expected = (np.min(np.sum(points ** 2, -1)) + np.mean(np.sum(points ** 2, -1))) * 1e3
  assert f == 0 and cd == pytest.approx(expected, rel=0.05)
  assert cd > evaluation.mesh_metrics(gt, gt, size=size)[0] + 10


def test_shape_figures_come_with_their_standard_error():
  box = trimesh.creation.box()
  empty = trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))
  objects = {'class': np.array([1, 2]), 'box3d': np.stack([BOX, BOX + [1, 0, 0, 0, 0, 0, 0]])}
  gt = [{'objects': {**objects, 'mesh': [box, box]}, 'layout': np.array([0, 0, 3, 5, 3, 6, 0.0])}]
  pred = [{'objects': {**objects, 'mesh': [box, empty]}}]
  m = evaluation.evaluate(gt, pred)
  f_same = evaluation.mesh_metrics(box, box, size=BOX[3:6])[1]
  assert m['num_meshed_objects'] == 2 and m['shape_fscore'] == pytest.approx(f_same / 2)
  # Two values a and 0: sample standard deviation a/√2, over √2.
  assert m['shape_fscore_stderr'] == pytest.approx(f_same / 2)
  assert 'Shapes: 2 meshed objects' in report.markdown(m)


def test_bbox_normalisation_makes_metrics_scale_invariant():
  mesh = trimesh.creation.annulus(0.2, 0.5, 0.3)
  big = mesh.copy()
  big.apply_scale(3.0)
  cd_same, f_same = evaluation.mesh_metrics(big, mesh, evaluation.UNIT_BBOX)
  assert f_same > 95 and cd_same < 0.5
  shifted = mesh.copy()
  shifted.apply_translation([0.1, 0, 0])  # beyond τ: √0.002 ≈ 0.045
  unnormalised = shape_metrics.ShapeMetricOptions(normalization='none', alignment='none')
  _, f_shift = evaluation.mesh_metrics(shifted, mesh, unnormalised)
  _, f_icp = evaluation.mesh_metrics(shifted, mesh, dataclasses.replace(unnormalised,
                                                                         alignment='rigid'))
  assert f_icp > f_shift + 10


def _perturbed(gt_scenes, sigma):
  rng = np.random.default_rng(1)
  out = []
  for g in gt_scenes:
    noise = rng.normal(0, sigma, g['objects']['box3d'].shape) * [1, 1, 1, 0.3, 0.3, 0.3, 1]
    boxes = g['objects']['box3d'] + noise
    out.append({'objects': {'class': g['objects']['class'], 'box3d': boxes},
                'layout': g['layout'] + rng.normal(0, sigma, 7) * [1, 1, 1, 0.3, 0.3, 0.3, 0.1]})
  return out


def test_evaluator_on_ground_truth_and_perturbed_ground_truth(scenes, tmp_path):
  gt = [{'objects': r['objects'], 'layout': r['layout'].astype(np.float64)} for r in scenes]
  perfect = evaluation.evaluate(gt, [{'objects': dict(g['objects']), 'layout': g['layout']}
                                    for g in gt])
  assert perfect['ap3d_15'] == pytest.approx(100) and perfect['iou3d_mean'] == pytest.approx(100)
  assert perfect['layout_iou'] == pytest.approx(100)
  assert perfect['l_align'] is None and perfect['shape_cd'] is None
  noisy = evaluation.evaluate(gt, _perturbed(gt, 0.1))
  noisier = evaluation.evaluate(gt, _perturbed(gt, 0.3))
  assert 100 > noisy['iou3d_mean'] > noisier['iou3d_mean'] > 0
  assert noisy['ap3d_15'] >= noisier['ap3d_15']
  assert noisy['layout_iou'] < 100
  report.write({**noisy, 'config': 'test'}, str(tmp_path / 'eval'))
  saved = json.loads((tmp_path / 'eval' / 'metrics.json').read_text())
  for key in ('ap3d_15', 'iou3d_mean', 'layout_iou', 'l_align', 'shape_cd', 'shape_fscore',
              'per_class', 'num_scenes'):
    assert key in saved
  assert set(saved['per_class']) == set(geometry.CLASSES)
  text = (tmp_path / 'eval' / 'report.md').read_text()
  assert f"{noisy['ap3d_15']:.2f}" in text and 'nightstand' in text


def test_evaluator_alignment_and_shape_metrics_with_known_answers():
  # One object: depth points exactly on the predicted surface give L_align 0; shifted by
  # 0.1 m along x (surface dense enough) give ≈ 0.01 m².
  grid = np.meshgrid(np.linspace(0, 1, 60), np.linspace(0, 1, 60), [0.0])
  surface = np.stack(grid, -1).reshape(-1, 3)
  depth = surface[::7] + [0, 0, 0.1]
  mesh = trimesh.creation.box()
  gt = [{'objects': {'class': np.array([1]), 'box3d': BOX[None], 'depth_points': [depth],
                     'mesh': [mesh]}, 'layout': np.array([0, 0, 3, 5, 3, 6, 0.0])}]
  pred = [{'objects': {'class': np.array([1]), 'box3d': BOX[None], 'surface_points': [surface],
                       'mesh': [mesh]}}]
  m = evaluation.evaluate(gt, pred)
  assert m['l_align'] == pytest.approx(0.01, rel=1e-4)
  # A surface against itself, resampled: in InstPIFu's frame the unit box is a cube of side
  # 2 (area 24), and two independent 10,000-point samples of it (density ρ) have a
  # neighbour within √τ with probability 1 − exp(−ρπτ) ≈ 93%: the protocol's own ceiling.
  density = 10_000 / 24
  assert m['shape_fscore'] == pytest.approx(100 * (1 - np.exp(-density * np.pi * 0.002)), abs=1)
  assert m['shape_cd'] < 2
  assert m['layout_iou'] is None  # no predicted layout
  assert m['per_class']['chair']['ap3d_15'] == pytest.approx(100)
  assert m['per_class']['bed']['ap3d_15'] is None


def test_ap_with_agreement_ranks_confident_objects_first():
  """The same boxes score a higher AP when the one that misses has the lowest confidence."""
  hit = np.array([0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0])
  miss = hit + [3.0, 0, 0, 0, 0, 0, 0]
  chair = geometry.CLASSES.index('chair')
  truth = [{'class': np.array([chair]), 'box3d': hit[None]} for _ in range(2)]
  guesses = [np.stack([miss]), np.stack([hit])]  # scene 0 missed, scene 1 found
  ranked = lambda scores: [{'class': np.array([chair]), 'box3d': g, 'score': np.array([s])}
                           for g, s in zip(guesses, scores)]
  # Confidence 1 everywhere: the miss comes first (stable order), precision 1/2 at recall 1/2.
  mean_ap = evaluation.evaluator.mean_average_precision
  assert mean_ap(truth, ranked([1.0, 1.0])) == pytest.approx(25.0)
  assert mean_ap(truth, ranked([0.3, 0.9])) == pytest.approx(50.0)
