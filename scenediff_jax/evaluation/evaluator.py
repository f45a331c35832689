"""Scores a split's predictions against its ground truth: every metric of DESIGN.md at once.

Inputs are lists with one dict per scene (numpy arrays; evaluation never runs a model):
  ground truth  {'objects': {'class' [n], 'box3d' [n, 7],
                             optional 'depth_points': n arrays [K_i, 3] (world frame),
                             optional 'mesh': n canonical-frame trimesh meshes or None,
                               scored in the proportions of their box3d},
                 'layout' [7]}
  prediction    {'objects': {'class' [m], 'box3d' [m, 7], optional 'score' [m] (1.0),
                             optional 'gt_index' [m] (the ground-truth object each
                               prediction was made for; default: the same position),
                             optional 'surface_points': m arrays [P, 3] (world frame),
                             optional 'mesh': m canonical-frame meshes or None},
                 optional 'layout' [7]}
A metric whose inputs are absent is None.
"""
import dataclasses

import numpy as np

from scenediff_jax.evaluation import alignment, detection, shape_metrics
from scenediff_jax.evaluation.box_iou import box_iou_3d
from scenediff_jax.geometry.classes import AP_CLASSES, CLASSES


def _finite(values):
  return np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)


def _mean_or_none(values):
  values = _finite(values)
  return float(values.mean()) if len(values) else None


def _stderr_or_none(values):
  """Standard error of the mean (sample standard deviation / √n); None below two values."""
  values = _finite(values)
  return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else None


def _gt_index(pred_objects):
  n = len(pred_objects['class'])
  return np.asarray(pred_objects.get('gt_index', np.arange(n)), int)


def evaluate(ground_truth, predictions, *, iou_threshold=0.15,
             shape_options: shape_metrics.ShapeMetricOptions = shape_metrics.INSTPIFU) -> dict:
  """The metrics of a split (percentages for AP, IoU and F-score; see DESIGN.md)."""
  if len(ground_truth) != len(predictions):
    raise ValueError(f'{len(ground_truth)} ground-truth scenes but {len(predictions)} predictions.')
  gt_objects = [g['objects'] for g in ground_truth]
  pred_objects = [{'score': np.ones(len(p['objects']['class'])), **p['objects']}
                  for p in predictions]

  # Per-object quantities, paired with the object each prediction was made for.
  per_object = {'class': [], 'iou': [], 'l_align': [], 'cd': [], 'fscore': []}
  for g, p in zip(gt_objects, pred_objects):
    index = _gt_index(p)
    gt_boxes = np.asarray(g['box3d']).reshape(-1, 7)[index]
    per_object['class'].extend(np.asarray(g['class'])[index].tolist())
    per_object['iou'].extend((100 * detection.paired_iou(gt_boxes, p['box3d'])).tolist())
    for k, i in enumerate(index):
      per_object['l_align'].append(
          alignment.object_alignment(g['depth_points'][i], p['surface_points'][k])
          if 'depth_points' in g and 'surface_points' in p else None)
      cd, f = None, None
      if 'mesh' in g and 'mesh' in p and g['mesh'][i] is not None and p['mesh'][k] is not None:
        cd, f = shape_metrics.mesh_metrics(p['mesh'][k], g['mesh'][i], shape_options,
                                           size=gt_boxes[k, 3:6])
      per_object['cd'].append(cd)
      per_object['fscore'].append(f)
  classes = np.asarray(per_object['class'], int)

  # AP at the DESIGN.md threshold 0.15 always, and at the requested one.
  ap_keys = {f'ap3d_{round(100 * t)}': t for t in sorted({0.15, iou_threshold})}
  per_class = {}
  for c, name in enumerate(CLASSES):
    mine = np.nonzero(classes == c)[0]
    per_class[name] = {}
    for key, threshold in ap_keys.items():
      ap = detection.average_precision(gt_objects, pred_objects, c, threshold)
      per_class[name][key] = None if np.isnan(ap) else 100 * ap
    per_class[name].update({
        'iou3d_mean': _mean_or_none(np.asarray(per_object['iou'])[mine]),
        'shape_cd': _mean_or_none([per_object['cd'][i] for i in mine]),
        'shape_fscore': _mean_or_none([per_object['fscore'][i] for i in mine]),
        'num_objects': int(sum(np.sum(np.asarray(g['class']) == c) for g in gt_objects)),
    })
  layout = [float(box_iou_3d(g['layout'][None], p['layout'][None])[0]) * 100
            for g, p in zip(ground_truth, predictions)
            if p.get('layout') is not None and np.all(np.asarray(g['layout'])[3:6] > 0)]
  metrics = {
      **{key: _mean_or_none([per_class[n][key] for n in AP_CLASSES]) for key in ap_keys},
      'iou3d_mean': _mean_or_none(per_object['iou']),
      'layout_iou': _mean_or_none(layout),
      'l_align': _mean_or_none(per_object['l_align']),
      'shape_cd': _mean_or_none(per_object['cd']),
      'shape_fscore': _mean_or_none(per_object['fscore']),
      'shape_cd_stderr': _stderr_or_none(per_object['cd']),
      'shape_fscore_stderr': _stderr_or_none(per_object['fscore']),
      'num_meshed_objects': sum(f is not None for f in per_object['fscore']),
      'per_class': per_class,
      'num_scenes': len(ground_truth),
      'num_objects': len(classes),
      'iou_threshold': iou_threshold,
      'shape_metric_options': dataclasses.asdict(shape_options),
  }
  return metrics


def mean_average_precision(ground_truth, predictions, iou_threshold=0.15):
  """AP3D (percent) averaged over AP_CLASSES, ranking each prediction by its `score`: the AP of
  `evaluate` alone, for scoring the same boxes under other confidences.

  Args:
    ground_truth: per scene {'class' [n], 'box3d' [n, 7]}.
    predictions: per scene {'class' [m], 'box3d' [m, 7], 'score' [m]}.
  """
  ap = [detection.average_precision(ground_truth, predictions, CLASSES.index(name),
                                    iou_threshold) for name in AP_CLASSES]
  return _mean_or_none([None if np.isnan(a) else 100 * a for a in ap])
