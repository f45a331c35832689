"""One scene estimate from K posterior samples: the per-element choice that IoU rewards.

A diffusion sample is a draw from p(scene | image), not its most likely value: where the
image leaves a quantity open (how far a room extends behind the camera, how deep an object
reaches), one draw scores worse under IoU than an estimate central to the posterior. Given K
samples of the same scene, each object takes the box (and the shape with it) of the sample
that overlaps the other samples most, the medoid under IoU, a minimum-Bayes-risk choice; the
room box takes the mean of the samples after turning each by quarter turns to agree with the
medoid's yaw (a room box turned a quarter turn with w and d swapped is the same box).

How far the samples scatter about that choice (`spread`) is what the model knows of its own
uncertainty: the mean IoU of the samples' boxes with the chosen one (the agreement, in
[1/K, 1], predict's and evaluation's confidence of an object), and the RMS distance of their
centres (m) and of their yaws (degrees) from it. numpy only, after sampling.
"""
import numpy as np

from scenediff_jax.evaluation.box_iou import pairwise_box_iou_3d
from scenediff_jax.geometry import boxes as boxes_lib


def medoid(boxes) -> int:
  """Index of the box [K, 7] with the largest summed IoU with all K boxes."""
  return int(np.argmax(pairwise_box_iou_3d(boxes, boxes).sum(1)))


def align_quarter_turns(boxes, reference_yaw):
  """Boxes [K, 7] turned by multiples of π/2 (w, d swapped on odd turns) to the yaw nearest
  `reference_yaw`; the solids are unchanged."""
  boxes = np.array(boxes, np.float64)
  turns = np.round((reference_yaw - boxes[:, 6]) / (np.pi / 2))
  odd = turns % 2 == 1
  boxes[odd, 3], boxes[odd, 5] = boxes[odd, 5], boxes[odd, 3].copy()
  boxes[:, 6] += turns * np.pi / 2
  return boxes


def mean_room(layouts):
  """The mean of room boxes [K, 7], aligned by quarter turns to their medoid."""
  reference = layouts[medoid(layouts), 6]
  aligned = align_quarter_turns(layouts, reference)
  mean = aligned.mean(0)
  mean[6] = boxes_lib.wrap_angle(mean[6])
  return boxes_lib.quarter_turn_canonical(mean)


def combine(samples: list, num_objects) -> dict:
  """K decoded samples of a batch (sampling.decode dicts: boxes [B, N, 7], layout [B, 7],
  gaussians [B, N, ...], intrinsics [B, N, ...]) → one dict of the same shapes. Objects
  beyond `num_objects` [B] (padding) come from the first sample."""
  out = {k: np.array(v) for k, v in samples[0].items()}
  stacked = {k: np.stack([np.asarray(s[k]) for s in samples], 1) for k in out}  # [B, K, ...]
  for b, n in enumerate(np.asarray(num_objects)):
    for j in range(int(n)):
      pick = medoid(stacked['boxes'][b, :, j])
      for key in ('boxes', 'gaussians', 'intrinsics'):
        out[key][b, j] = stacked[key][b, pick, j]
    out['layout'][b] = mean_room(stacked['layout'][b])
  return out


def spread(sample_boxes, chosen_boxes) -> dict:
  """How K samples of n objects scatter about the chosen boxes.

  Args:
    sample_boxes: [K, n, 7] world boxes of the samples.
    chosen_boxes: [n, 7] the consensus (`combine`'s boxes).
  Returns:
    {'agreement': [n] mean IoU of the K samples with the chosen box (1 when they all match;
     the chosen sample itself counts), 'center_spread': [n] RMS distance of the centres from
     the chosen one (m), 'yaw_spread': [n] RMS yaw difference (degrees, wrapped to ±180°)}.
  """
  samples = np.asarray(sample_boxes, np.float64)
  chosen = np.asarray(chosen_boxes, np.float64)
  n = chosen.shape[0]
  iou = np.array([pairwise_box_iou_3d(samples[:, j], chosen[j:j + 1])[:, 0] for j in range(n)])
  offsets = np.linalg.norm(samples[..., :3] - chosen[None, :, :3], axis=-1)  # [K, n]
  turns = boxes_lib.wrap_angle(samples[..., 6] - chosen[None, :, 6])
  return {'agreement': iou.reshape(n, -1).mean(1),
          'center_spread': np.sqrt(np.mean(offsets ** 2, 0)),
          'yaw_spread': np.degrees(np.sqrt(np.mean(turns ** 2, 0)))}
