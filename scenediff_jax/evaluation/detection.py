"""AP3D (VOC-style average precision at a 3D IoU threshold) and per-object IoU3D.

Protocol (Total3D/Im3D on SUN RGB-D): per class, all predictions of the split are sorted by
confidence; each is matched greedily to the unmatched ground-truth object of the same class
and scene with which it has the highest 3D IoU; it is a true positive when that IoU reaches
the threshold (0.15) and the object was not matched before, otherwise a false positive
(duplicates included). AP is the area under the interpolated precision/recall curve (the
precision envelope, VOC 2010+ "all points"). Classes without ground truth have no AP (NaN)
and are left out of the class mean.
"""
import numpy as np

from scenediff_jax.evaluation.box_iou import box_iou_3d, pairwise_box_iou_3d


def voc_ap(recall, precision):
  """Area under the precision envelope of a recall/precision curve (sorted by recall)."""
  r = np.concatenate([[0.0], recall, [1.0]])
  p = np.concatenate([[0.0], precision, [0.0]])
  p = np.maximum.accumulate(p[::-1])[::-1]  # envelope: best precision at recall ≥ r
  steps = np.nonzero(r[1:] != r[:-1])[0]
  return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def average_precision(ground_truth, predictions, class_index, iou_threshold=0.15):
  """AP of one class over a split.

  ground_truth: per scene, a dict with `class` [n] and `box3d` [n, 7].
  predictions: per scene, a dict with `class` [m], `box3d` [m, 7] and `score` [m].
  Returns NaN when the class has no ground truth.
  """
  num_gt = sum(int(np.sum(np.asarray(g['class']) == class_index)) for g in ground_truth)
  entries = []  # (score, scene, prediction box)
  for s, p in enumerate(predictions):
    keep = np.asarray(p['class']) == class_index
    for score, box in zip(np.asarray(p['score'])[keep], np.asarray(p['box3d'])[keep]):
      entries.append((float(score), s, box))
  if num_gt == 0:
    return float('nan')
  if not entries:
    return 0.0
  entries.sort(key=lambda e: -e[0])  # stable: ties keep their input order
  gt_boxes = [np.asarray(g['box3d'])[np.asarray(g['class']) == class_index] for g in ground_truth]
  matched = [np.zeros(len(b), bool) for b in gt_boxes]
  true_positive = np.zeros(len(entries))
  for k, (_, s, box) in enumerate(entries):
    if len(gt_boxes[s]) == 0:
      continue
    iou = pairwise_box_iou_3d(box[None], gt_boxes[s])[0]
    j = int(np.argmax(iou))
    if iou[j] >= iou_threshold and not matched[s][j]:
      matched[s][j] = True
      true_positive[k] = 1
  tp = np.cumsum(true_positive)
  fp = np.cumsum(1 - true_positive)
  return voc_ap(tp / num_gt, tp / np.maximum(tp + fp, 1e-12))


def paired_iou(gt_boxes, pred_boxes):
  """IoU3D of each prediction with its own ground-truth object (Total3D's per-object IoU)."""
  return box_iou_3d(np.asarray(pred_boxes).reshape(-1, 7), np.asarray(gt_boxes).reshape(-1, 7))
