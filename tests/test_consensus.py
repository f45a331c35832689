"""The K-sample consensus: medoid boxes under IoU, a quarter-turn-aware mean room box."""
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
