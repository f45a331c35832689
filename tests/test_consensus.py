"""The K-sample consensus: medoid boxes under IoU, a quarter-turn-aware mean room box, and the
samples' spread about it (agreement, centre and yaw spreads) as a confidence."""
import numpy as np

from scenediff_jax.evaluation.box_iou import box_iou_3d
from scenediff_jax.inference import consensus


def test_medoid_is_the_box_that_overlaps_the_others_most():
  centre = np.array([0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.2])
  outlier = centre + [2.0, 0, 0, 0, 0, 0, 0]
  near = [centre + [dx, 0, 0, 0, 0, 0, 0] for dx in (-0.2, 0.2, -0.1, 0.1)]
  boxes = np.stack([outlier, *near, centre])
  assert consensus.medoid(boxes) == 5
  # The medoid minimises the expected IoU loss over the samples (brute force).
  risk = [-sum(box_iou_3d(b[None], o[None])[0] for o in boxes) for b in boxes]
  assert consensus.medoid(boxes) == int(np.argmin(risk))


def test_room_mean_agrees_across_quarter_turns():
  room = np.array([0.3, -0.2, 3.0, 4.0, 2.6, 5.0, np.pi / 4 - 0.05])
  # The same solid written with a quarter turn more: w and d swapped.
  turned = np.array([0.3, -0.2, 3.0, 5.0, 2.6, 4.0, room[6] - np.pi / 2])
  mean = consensus.mean_room(np.stack([room, turned, room]))
  np.testing.assert_allclose(box_iou_3d(mean[None], room[None]), 1.0, atol=1e-9)
  # A naive mean of the raw numbers would mix widths and depths and yaws.
  naive = np.stack([room, turned, room]).mean(0)
  assert box_iou_3d(naive[None], room[None])[0] < 0.95
  # Shifted samples average to the centre.
  shifted = np.stack([room + [d, 0, 0, 0, 0, 0, 0] for d in (-0.4, 0.4)])
  np.testing.assert_allclose(consensus.mean_room(shifted)[:3], room[:3], atol=1e-12)


def test_combine_takes_each_objects_shape_with_its_box_and_leaves_padding():
  rng = np.random.default_rng(0)
  K, B, N, g = 5, 2, 3, 4
  base = np.array([0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0])
  samples = []
  for k in range(K):
    boxes = np.tile(base, (B, N, 1)) + [k * 0.3 * (k % 2), 0, 0, 0, 0, 0, 0]  # odd k drift
    samples.append({'boxes': boxes, 'layout': np.tile(base * [1, 1, 1, 5, 3, 5, 1], (B, 1)),
                    'gaussians': np.full((B, N, g, 16), float(k)),
                    'intrinsics': rng.normal(size=(B, N, g, 2))})
  out = consensus.combine(samples, num_objects=np.array([2, 3]))
  for b, n in ((0, 2), (1, 3)):
    for j in range(n):
      k = int(out['gaussians'][b, j, 0, 0])
      assert k % 2 == 0  # an undrifted sample's box wins
      np.testing.assert_array_equal(out['boxes'][b, j], samples[k]['boxes'][b, j])
      np.testing.assert_array_equal(out['intrinsics'][b, j], samples[k]['intrinsics'][b, j])
  np.testing.assert_array_equal(out['gaussians'][0, 2], samples[0]['gaussians'][0, 2])


def test_spread_known_answers():
  box = np.array([0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0])
  same = consensus.spread(np.stack([box] * 4)[:, None], box[None])
  np.testing.assert_allclose(same['agreement'], 1.0)
  np.testing.assert_allclose([same['center_spread'], same['yaw_spread']], 0.0, atol=1e-12)
  # Two of four samples shifted 0.5 m along x (IoU 1/3 with the chosen box), one turned by
  # 20° and one by −350° (= +10°: yaws are wrapped before they are compared).
  shifted = box + [0.5, 0, 0, 0, 0, 0, 0]
  s = consensus.spread(np.stack([box, shifted, shifted, box])[:, None], box[None])
  np.testing.assert_allclose(s['agreement'], (1 + 1 / 3 + 1 / 3 + 1) / 4)
  np.testing.assert_allclose(s['center_spread'], np.sqrt(2 * 0.25 / 4))
  turned = [box + [0, 0, 0, 0, 0, 0, np.radians(a)] for a in (20.0, -350.0)]
  s = consensus.spread(np.stack([box, *turned, box])[:, None], box[None])
  np.testing.assert_allclose(s['yaw_spread'], np.sqrt((20 ** 2 + 10 ** 2) / 4), rtol=1e-9)


def test_objects_whose_samples_agree_score_higher_than_scattered_ones():
  rng = np.random.default_rng(0)
  chair = np.array([-1.0, 0.5, 3.0, 0.5, 0.9, 0.5, 0.0])
  bed = np.array([1.0, 0.6, 4.0, 1.6, 0.6, 2.0, 0.3])
  samples = np.stack([np.stack([chair + rng.normal(0, 0.02, 7) * [1, 1, 1, 0, 0, 0, 1],
                                bed + rng.normal(0, 0.4, 7) * [1, 1, 1, 0, 0, 0, 1]])
                      for _ in range(8)])  # [K, 2, 7]: the chair tight, the bed scattered
  decoded = [{'boxes': s[None], 'layout': np.zeros((1, 7)) + [0, 0, 3, 4, 3, 5, 0],
              'gaussians': np.zeros((1, 2, 1, 16)), 'intrinsics': np.zeros((1, 2, 1, 2))}
             for s in samples]
  chosen = consensus.combine(decoded, [2])['boxes'][0]
  s = consensus.spread(samples, chosen)
  assert s['agreement'][0] > 0.8 > s['agreement'][1]
  assert s['center_spread'][0] < 0.1 < s['center_spread'][1]
  assert s['yaw_spread'][0] < s['yaw_spread'][1]
  # Deterministic: the same samples give the same figures.
  again = consensus.spread(samples, consensus.combine(decoded, [2])['boxes'][0])
  for key in s:
    np.testing.assert_array_equal(s[key], again[key])
