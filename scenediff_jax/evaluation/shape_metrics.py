"""Chamfer distance and F-score between two surfaces, with the conventions made explicit.

Peers disagree on these, so every choice is a parameter:
- `normalization`: 'bbox' (each mesh centred on its bounding box and scaled so the box's
  longest side is 1) or 'none'.
- the F-score threshold τ, and whether it applies to squared distances (`squared=True`)
  or to distances.
- optional rigid ICP alignment of the prediction to the ground truth before scoring.
Chamfer = mean squared nearest-neighbour distance prediction→GT plus GT→prediction,
reported ×10³ (InstPIFu's `mean(dist1) + mean(dist2)`); F-score in percent,
2PR/(P+R) with precision P = % of predicted points within τ of the GT and recall R the
reverse (OccNet/LDIF).

INSTPIFU (the default): normalization 'bbox', τ = 0.002 on squared distances, 10,000 points.
OCCNET: normalization 'bbox', τ = 1% of the GT's bounding-box extent on distances.
"""
import dataclasses

import numpy as np
import trimesh

from scenediff_jax.geometry import nearest_sq_dist

_F_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class ShapeMetricOptions:
  num_points: int = 10_000
  normalization: str = 'bbox'       # 'bbox' or 'none'
  fscore_tau: float = 0.002
  squared: bool = True              # τ compares with squared distances
  tau_relative_to_extent: bool = False  # τ × (longest side of the GT's bounding box)
  icp: bool = False                 # rigidly align the prediction to the GT first
  seed: int = 0


INSTPIFU = ShapeMetricOptions()
OCCNET = ShapeMetricOptions(fscore_tau=0.01, squared=False, tau_relative_to_extent=True)


def normalize_to_bbox(points):
  """Points centred on their bounding box, scaled so its longest side is 1."""
  lo, hi = points.min(0), points.max(0)
  return (points - (lo + hi) / 2) / max(float(np.max(hi - lo)), 1e-12)


def _squared_nn(a, b):
  return np.asarray(nearest_sq_dist(np.asarray(a, np.float32), np.asarray(b, np.float32)),
                    np.float64)


def chamfer_and_fscore(pred_points, gt_points, options: ShapeMetricOptions = INSTPIFU):
  """(Chamfer ×10³, F-score %) between two point samples [P, 3] and [Q, 3]."""
  pred, gt = np.asarray(pred_points, np.float64), np.asarray(gt_points, np.float64)
  if options.normalization == 'bbox':
    pred, gt = normalize_to_bbox(pred), normalize_to_bbox(gt)
  elif options.normalization != 'none':
    raise ValueError(f"normalization must be 'bbox' or 'none', got {options.normalization!r}.")
  if options.icp:
    pred = icp_align(pred, gt)
  d_pred, d_gt = _squared_nn(pred, gt), _squared_nn(gt, pred)
  chamfer = (d_pred.mean() + d_gt.mean()) * 1e3
  tau = options.fscore_tau
  if options.tau_relative_to_extent:
    tau *= float(np.max(gt.max(0) - gt.min(0)))
  if not options.squared:
    d_pred, d_gt = np.sqrt(d_pred), np.sqrt(d_gt)
  precision = 100.0 * np.mean(d_pred <= tau)
  recall = 100.0 * np.mean(d_gt <= tau)
  fscore = 2 * precision * recall / (precision + recall + _F_EPS)
  return float(chamfer), float(fscore)


def mesh_metrics(pred_mesh: trimesh.Trimesh, gt_mesh: trimesh.Trimesh,
                 options: ShapeMetricOptions = INSTPIFU):
  """Samples both surfaces (area-uniform, seeded) and scores them. A prediction without
  faces (the field had no surface) is scored as one point at the box centre, the canonical
  origin: F-score 0 and the Chamfer distance of the GT's points to its centre."""
  rng = np.random.default_rng(options.seed)
  if len(pred_mesh.faces) == 0:
    pred = np.zeros((options.num_points, 3))
  else:
    pred, _ = trimesh.sample.sample_surface(pred_mesh, options.num_points, seed=rng)
  gt, _ = trimesh.sample.sample_surface(gt_mesh, options.num_points, seed=rng)
  return chamfer_and_fscore(pred, gt, options)


def icp_align(source, target, iterations=50):
  """`source` points rigidly moved onto `target` by ICP (trimesh's, from the identity)."""
  matrix, _, _ = trimesh.registration.icp(source, target, max_iterations=iterations,
                                          reflection=False, scale=False)
  return trimesh.transform_points(source, matrix)
