"""Chamfer distance and F-score between two surfaces, with the conventions made explicit.

Peers disagree on these, so every choice is a parameter:
- `normalization`, the frame both surfaces are scored in:
  'gt_box': canonical-frame surfaces (the object's box is [−0.5, 0.5]³) stretched back to the
    ground-truth box's proportions with its longest side `longest_side` long: both get
    p ↦ longest_side · p ⊙ size / max(size), where `size` is the ground-truth box's size.
  'bbox': each surface centred on its own bounding box and scaled so that the box's longest
    side is `longest_side`.
  'none': as given.
- `alignment` of the prediction onto the ground truth before scoring: 'none', 'rigid' or
  'similarity' (rotation, translation and one scale), by ICP with correspondences both ways.
- the F-score threshold τ, and whether it applies to squared distances (`squared=True`) or to
  distances.
Chamfer = mean squared nearest-neighbour distance prediction→GT plus GT→prediction, reported
×10³; F-score in percent, 2PR/(P+R) with precision P = % of predicted points within τ of the
GT and recall R the reverse (OccNet/LDIF).

INSTPIFU (the default) is InstPIFu's `evaluate_object_reconstruction.py`, whose numbers the
paper's Pix3D table quotes: the normalised mesh times size / max(size) (their canonical cube
spans [−1, 1], so the longest side is 2), the prediction aligned to the ground truth (they
run LDIF's `mshalign`, PCA then ICP with translation, rotation and scale), 10,000 points on
each, τ = 0.002 on squared distances, CD = mean d₁² + mean d₂². Our ICP starts from the
identity instead of PCA axes: our predictions come in the ground truth's canonical frame.
UNIT_BBOX is the convention of our figures before issue 22 (each surface's own bounding box,
longest side 1, no alignment): with the same τ it is twice as lenient in distance, and its
CD is 4× smaller.
OCCNET: 'bbox' with longest side 1, τ = 1% of the GT's extent, on distances.
"""
import dataclasses

import numpy as np
from scipy.spatial import cKDTree
import trimesh

from scenediff_jax.geometry import nearest_sq_dist

_F_EPS = 1e-9
NORMALIZATIONS = ('gt_box', 'bbox', 'none')
ALIGNMENTS = ('none', 'rigid', 'similarity')


@dataclasses.dataclass(frozen=True)
class ShapeMetricOptions:
  num_points: int = 10_000
  normalization: str = 'gt_box'     # one of NORMALIZATIONS
  longest_side: float = 2.0         # of the box in 'gt_box' and 'bbox'
  alignment: str = 'similarity'     # one of ALIGNMENTS
  fscore_tau: float = 0.002
  squared: bool = True              # τ compares with squared distances
  tau_relative_to_extent: bool = False  # τ × (longest side of the GT's bounding box)
  seed: int = 0


INSTPIFU = ShapeMetricOptions()
UNIT_BBOX = ShapeMetricOptions(normalization='bbox', longest_side=1.0, alignment='none')
OCCNET = ShapeMetricOptions(normalization='bbox', longest_side=1.0, alignment='none',
                            fscore_tau=0.01, squared=False, tau_relative_to_extent=True)


def normalize_to_bbox(points, longest_side=1.0):
  """Points centred on their bounding box, scaled so its longest side is `longest_side`."""
  lo, hi = points.min(0), points.max(0)
  return (points - (lo + hi) / 2) * longest_side / max(float(np.max(hi - lo)), 1e-12)


def to_gt_box(points, size, longest_side=2.0):
  """Canonical points [N, 3] in the ground-truth box's proportions, longest side as given."""
  size = np.asarray(size, np.float64).reshape(3)
  if not np.all(size > 0):
    raise ValueError(f'The ground-truth box size must be positive, got {size.tolist()}.')
  return points * (longest_side * size / size.max())


def _squared_nn(a, b):
  return np.asarray(nearest_sq_dist(np.asarray(a, np.float32), np.asarray(b, np.float32)),
                    np.float64)


def _normalize(points, options, size):
  if options.normalization == 'gt_box':
    if size is None:
      raise ValueError("normalization='gt_box' needs the ground-truth box size (size=...); "
                       "pass it, or use UNIT_BBOX / normalization='bbox'.")
    return to_gt_box(points, size, options.longest_side)
  if options.normalization == 'bbox':
    return normalize_to_bbox(points, options.longest_side)
  if options.normalization == 'none':
    return points
  raise ValueError(f'normalization must be one of {NORMALIZATIONS}, got '
                   f'{options.normalization!r}.')


def chamfer_and_fscore(pred_points, gt_points, options: ShapeMetricOptions = INSTPIFU,
                       size=None):
  """(Chamfer ×10³, F-score %) between two point samples [P, 3] and [Q, 3].

  `size` is the ground-truth box's size (any unit; only its proportions matter), needed by
  normalization 'gt_box'; the points are then in the canonical frame of that box.
  """
  pred = _normalize(np.asarray(pred_points, np.float64), options, size)
  gt = _normalize(np.asarray(gt_points, np.float64), options, size)
  if options.alignment not in ALIGNMENTS:
    raise ValueError(f'alignment must be one of {ALIGNMENTS}, got {options.alignment!r}.')
  if options.alignment != 'none':
    pred = align(pred, gt, scale=options.alignment == 'similarity')
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
                 options: ShapeMetricOptions = INSTPIFU, size=None):
  """Samples both surfaces (area-uniform, seeded) and scores them; `size` as in
  `chamfer_and_fscore`. A prediction without faces (the field had no surface) is scored as
  one point at the box centre, the canonical origin: F-score 0 and the Chamfer distance of
  the GT's points to its centre."""
  rng = np.random.default_rng(options.seed)
  if len(pred_mesh.faces) == 0:
    pred = np.zeros((options.num_points, 3))
    options = dataclasses.replace(options, alignment='none')  # nothing to align
  else:
    pred, _ = trimesh.sample.sample_surface(pred_mesh, options.num_points, seed=rng)
  gt, _ = trimesh.sample.sample_surface(gt_mesh, options.num_points, seed=rng)
  return chamfer_and_fscore(pred, gt, options, size)


def align(source, target, scale=True, iterations=30, fit_points=2000, seed=0):
  """`source` points [P, 3] moved onto `target` [Q, 3] by ICP from the identity: each round
  pairs every point with its nearest neighbour in the other set, both ways (one-way pairs
  let a similarity shrink onto part of the target), and fits the rotation, translation and,
  with `scale`, one scale factor to all pairs (Umeyama, via trimesh.registration.procrustes).
  `fit_points` of each set take part in the fit; the result moves all of `source`."""
  rng = np.random.default_rng(seed)
  pick = lambda x: x[rng.choice(len(x), min(fit_points, len(x)), replace=False)]
  src, tgt = pick(np.asarray(source, np.float64)), pick(np.asarray(target, np.float64))
  target_tree = cKDTree(tgt)
  matrix, previous = np.eye(4), np.inf
  for _ in range(iterations):
    moved = trimesh.transform_points(src, matrix)
    to_target = target_tree.query(moved)[1]
    to_source = cKDTree(moved).query(tgt)[1]
    a = np.concatenate([src, src[to_source]])
    b = np.concatenate([tgt[to_target], tgt])
    matrix, _, cost = trimesh.registration.procrustes(a, b, reflection=False, scale=scale)
    if previous - cost < 1e-9 * max(previous, 1e-12):
      break
    previous = cost
  return trimesh.transform_points(np.asarray(source, np.float64), matrix)
