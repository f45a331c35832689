"""Camera pitch and roll from one image: the vanishing points of its edges.

Indoor scenes are full of vertical edges (wall corners, door frames, the sides and legs of
furniture) and of horizontal ones in a few directions (floor boards, the foot of a wall, the
tops of furniture). The images of parallel edges meet at a vanishing point; seen through K⁻¹,
the vertical edges' point is the down direction g in the camera frame, and every horizontal
direction lies 90° from g (on the horizon). By camera.py's signs

  g = R_wc · (0, 1, 0) = (cos p · sin r, cos p · cos r, sin p),

so pitch = asin(g_z) and roll = atan2(g_x, g_y).

The estimator is classical and deterministic (numpy and scikit-image):
  1. line segments: Canny edge pixels grouped by gradient direction into connected regions,
     each fitted by its principal axis (`line_segments`); a segment is the plane through the
     camera centre with normal n = K⁻¹p₁ × K⁻¹p₂, and it can be vertical when n · g = 0;
  2. hypotheses for g within `max_tilt` of the camera's down axis and rolled at most
     `max_roll`: where two segments meet, where a segment's plane is 90° from a vanishing
     point, and the normal of two vanishing points (a horizon);
  3. each hypothesis is scored by the length of the segments that point at it (within
     `inlier_degrees` in the image) plus that of the two largest groups of other segments
     that share one horizontal direction under it; the best is refitted by least squares;
  4. the confidence is 1 − (score of the best rival at least 5° away) / (score of the
     estimate): near 0 when another direction explains the edges as well. Below
     `min_confidence` the estimate is not reliable and callers fall back to a level camera.

On SynthRooms renders the estimate has a median error under 1° (docs/camera_estimation.md).
"""
import dataclasses

import numpy as np
from PIL import Image
from skimage import feature, filters, measure

from scenediff_jax.geometry import camera

WORKING_SIZE = 640  # pixels, the longer side: larger photos are downscaled (K with them)
RIVAL_DEGREES = 5.0  # a rival hypothesis lies at least this far from the estimate
ORIENTATION_BINS = 24  # of 15°: edge pixels are grouped by gradient direction within a bin


@dataclasses.dataclass(frozen=True)
class GravityOptions:
  max_tilt: float = 40.0  # degrees between g and the camera's down axis, at most
  # |roll| at most: SUN RGB-D's cameras roll within ±20° (Total3D's roll bins).
  max_roll: float = 20.0
  inlier_degrees: float = 1.5  # a segment points at a vanishing point within this angle
  horizontal_degrees: float = 2.0  # azimuth tolerance of a group of horizontal segments
  min_length: float = 0.04  # of the working image's longer side: shorter segments are ignored
  max_segments: int = 150  # the longest segments that vote
  max_hypotheses: int = 60  # the longest possibly vertical segments paired for hypotheses
  min_confidence: float = 0.02  # less is not reliable (chosen on SynthRooms train scenes)


@dataclasses.dataclass(frozen=True)
class GravityEstimate:
  pitch: float  # radians, camera.py's signs; 0 when nothing was found
  roll: float
  confidence: float  # in [0, 1]: see the module docstring
  vertical_lines: int  # segments that point at the estimated vanishing point
  reliable: bool
  reason: str  # why it is not reliable ('' when it is)


def _gray(image):
  image = np.asarray(image)
  if image.ndim == 3:
    image = image[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]
  return image.astype(np.float64) / 255.0


def working_image(image, K):
  """(gray float image, K) with the longer side at most WORKING_SIZE pixels."""
  image = np.asarray(image)
  h, w = image.shape[:2]
  scale = WORKING_SIZE / max(h, w)
  if scale < 1:
    size = (max(round(w * scale), 1), max(round(h * scale), 1))
    image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    K = camera.scale_intrinsics(np.asarray(K, np.float64), size[0] / w, size[1] / h)
  return _gray(image), np.asarray(K, np.float64)


def line_segments(gray, min_length, sigma=1.5):
  """Straight edges of a gray image.

  Edge pixels (Canny) are binned by gradient orientation twice, the second time with the bins
  shifted by half a bin so that no line is cut at a bin edge; each 8-connected region of one
  bin is fitted by its principal axis, and kept when it is long, thin and densely covered.
  Regions found by both binnings are kept once (the longer first).

  Args:
    gray: float [H, W].
    min_length: pixels.
    sigma: of Canny's Gaussian.
  Returns:
    float [S, 4] segments (x1, y1, x2, y2) in pixels, longest first.
  """
  edges = feature.canny(gray, sigma=sigma, low_threshold=0.02, high_threshold=0.05)
  smooth = filters.gaussian(gray, sigma)
  angle = np.arctan2(filters.sobel_h(smooth), filters.sobel_v(smooth))  # gradient direction
  rows, cols = np.nonzero(edges)
  # Signed: the two sides of a thin leg have opposite gradients and stay apart.
  orientation = np.mod(angle[rows, cols], 2 * np.pi) / (2 * np.pi) * ORIENTATION_BINS
  found = []
  for shift in (0.0, 0.5):
    bins = np.floor(np.mod(orientation + shift, ORIENTATION_BINS)).astype(np.int64)
    labelled = np.zeros(gray.shape, np.int64)
    labelled[rows, cols] = bins + 1
    for b in range(ORIENTATION_BINS):
      regions = measure.label(labelled == b + 1, connectivity=2)
      for region in measure.regionprops(regions):
        if region.area >= min_length:
          found.append(region.coords)
  used = np.zeros(gray.shape, bool)
  segments = []
  for coords in sorted(found, key=len, reverse=True):
    if used[coords[:, 0], coords[:, 1]].mean() > 0.5:
      continue  # the same edge from the other binning
    segment = _fit_segment(coords[:, ::-1].astype(np.float64), min_length)
    if segment is not None:
      used[coords[:, 0], coords[:, 1]] = True
      segments.append(segment)
  segments = np.array(segments, np.float64).reshape(-1, 4)
  lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
  return segments[np.argsort(-lengths, kind='stable')]


def _fit_segment(points, min_length, max_residual=0.75, min_coverage=0.7):
  """The principal-axis segment of pixel centres [M, 2] (x, y), or None when they are not a
  long, thin, densely covered line."""
  mean = points.mean(0)
  centred = points - mean
  _, singular, axes = np.linalg.svd(centred, full_matrices=False)
  direction = axes[0]
  along = centred @ direction
  length = along.max() - along.min()
  residual = singular[1] / np.sqrt(len(points))  # RMS distance from the line, pixels
  if length < min_length or residual > max_residual or len(points) < min_coverage * length:
    return None
  return np.concatenate([mean + along.min() * direction, mean + along.max() * direction])


def _plane_normals(segments, K):
  """Unit normals [S, 3] of the planes through the camera centre and each segment."""
  K_inv = np.linalg.inv(K)
  ends = lambda xy: np.concatenate([xy, np.ones((len(xy), 1))], 1) @ K_inv.T
  normals = np.cross(ends(segments[:, :2]), ends(segments[:, 2:]))
  return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _image_angle_errors(segments, K, g):
  """Degrees [..., S] between each segment and the image line from its midpoint to the
  vanishing point K·g of each direction g [..., 3] (the point may lie at infinity)."""
  v = np.asarray(g) @ K.T
  middle = 0.5 * (segments[:, :2] + segments[:, 2:])
  towards = v[..., None, :2] - middle * v[..., None, 2:]
  along = segments[:, 2:] - segments[:, :2]
  cross = along[:, 0] * towards[..., 1] - along[:, 1] * towards[..., 0]
  dot = np.sum(along * towards, -1)
  return np.degrees(np.arctan(np.abs(cross) / (np.abs(dot) + 1e-12)))


def _down(g):
  """g turned to point down (positive camera y), unit length."""
  g = g / np.linalg.norm(g)
  return -g if g[1] < 0 else g


def _azimuths(normals, g):
  """For each hypothesis g [P, 3], the azimuth [P, S] about g, modulo π, of the horizontal
  direction each segment would have if it were horizontal (n × g): parallel horizontal
  edges share it when g is right."""
  e1 = np.cross(g, [1.0, 0.0, 0.0])  # g is near the camera's y axis, never along x
  e1 /= np.linalg.norm(e1, axis=-1, keepdims=True)
  e2 = np.cross(g, e1)
  h = np.cross(normals[None], g[:, None])
  return np.mod(np.arctan2(np.einsum('psk,pk->ps', h, e2), np.einsum('psk,pk->ps', h, e1)),
                np.pi)


def _horizontal_groups(normals, lengths, g, vertical, tolerance):
  """The two largest groups of non-vertical segments that share a horizontal direction under
  each hypothesis g [P, 3] (a group needs two segments): the horizontal vanishing points,
  which lie 90° from g.

  Returns:
    (support [P]: their summed length, members [P, 2, S] bool).
  """
  phi = _azimuths(normals, g)
  difference = np.abs(phi[:, :, None] - phi[:, None, :])
  close = np.minimum(difference, np.pi - difference) < tolerance  # [P, S, S]
  weights = np.where(vertical, 0.0, lengths[None])  # [P, S]
  close &= (weights > 0)[:, :, None] & (weights > 0)[:, None, :]
  group = np.einsum('psr,pr->ps', close, weights)
  group = np.where(close.sum(-1) >= 2, group, 0.0)
  first = np.argmax(group, 1)
  phi_first = np.take_along_axis(phi, first[:, None], 1)
  apart = np.abs(phi - phi_first)
  apart = np.minimum(apart, np.pi - apart) > 3 * tolerance
  second = np.argmax(np.where(apart, group, -1.0), 1)
  rows = np.arange(len(g))
  second_exists = apart[rows, second] & (group[rows, second] > 0)
  members = np.stack([close[rows, first] & (group[rows, first] > 0)[:, None],
                      close[rows, second] & second_exists[:, None]], 1)
  return np.einsum('pgs,s->p', members, lengths), members


def _refine(normals, lengths, vertical, groups):
  """The unit g with the vertical segments' planes through it and the horizontal groups'
  vanishing points d 90° from it: the minimiser of Σ_vertical w (n · g)² + Σ_groups W (d · g)²,
  with w a segment's length and W a group's."""
  scatter = lambda n, w: (n * w[:, None]).T @ n
  M = scatter(normals[vertical], lengths[vertical])
  for members in groups:
    if members.sum() >= 2:
      d = np.linalg.eigh(scatter(normals[members], lengths[members]))[1][:, 0]
      M += lengths[members].sum() * np.outer(d, d)
  return _down(np.linalg.eigh(M)[1][:, 0])


def _plausible(g, options):
  """[P] whether down directions g [P, 3] are a camera's the options allow."""
  roll = np.degrees(np.arctan2(g[:, 0], g[:, 1]))
  return (g[:, 1] >= np.cos(np.radians(options.max_tilt))) & (np.abs(roll) <= options.max_roll)


def _unit_down(directions, options):
  """Directions [P, 3] made unit and pointing down; the implausible ones dropped."""
  norm = np.linalg.norm(directions, axis=1)
  directions = directions[norm > 1e-9] / norm[norm > 1e-9, None]
  directions = directions * np.where(directions[:, 1:2] < 0, -1.0, 1.0)
  return directions[_plausible(directions, options)]


def _vanishing_points(segments, normals, lengths, K, options, count=4, pool=40):
  """Up to `count` vanishing points [V, 3] (unit, either sign) found one after another, each
  the pair-of-segments intersection that the most segment length points at, its segments
  then set aside."""
  left = np.ones(len(segments), bool)
  points = []
  for _ in range(count):
    pool_index = np.nonzero(left)[0][:pool]
    if len(pool_index) < 2:
      break
    a, b = np.triu_indices(len(pool_index), 1)
    candidates = np.cross(normals[pool_index[a]], normals[pool_index[b]])
    norm = np.linalg.norm(candidates, axis=1)
    candidates = candidates[norm > 1e-9] / norm[norm > 1e-9, None]
    agree = _image_angle_errors(segments, K, candidates) < options.inlier_degrees
    agree &= left
    support = agree @ lengths
    best = np.argmax(support)
    if agree[best].sum() < 2:
      break
    points.append(candidates[best])
    left &= ~agree[best]
  return np.array(points).reshape(-1, 3)


def _hypotheses(segments, normals, lengths, K, options):
  """Unit down directions [P, 3] within max_tilt of the camera's down axis to score: where two
  possibly vertical segments meet; where a possibly vertical segment's plane is 90° from a
  vanishing point; and the normal of two vanishing points (a horizon)."""
  cos_tilt = np.cos(np.radians(options.max_tilt))
  # Possibly vertical: the segment's plane holds a direction within the cone.
  in_cone = np.sqrt(np.maximum(1 - normals[:, 1] ** 2, 0)) >= cos_tilt
  candidates = np.nonzero(in_cone)[0][:options.max_hypotheses]
  first, second = np.triu_indices(len(candidates), 1)
  from_pairs = np.cross(normals[candidates[first]], normals[candidates[second]])
  points = _vanishing_points(segments, normals, lengths, K, options)
  with_point = np.cross(normals[candidates][:, None], points[None]).reshape(-1, 3)
  a, b = np.triu_indices(len(points), 1)
  horizons = np.cross(points[a], points[b])
  return _unit_down(np.concatenate([from_pairs, with_point, horizons, points]), options)


def estimate_gravity(image, K, options: GravityOptions = GravityOptions()) -> GravityEstimate:
  """Pitch and roll of the camera that took `image`, from its edges.

  Args:
    image: uint8 [H, W, 3] (or gray [H, W]).
    K: its 3×3 intrinsics.
    options: the estimator's thresholds.
  Returns:
    A GravityEstimate; when it is not `reliable`, pitch and roll are the best guess (0 when
    there is none) and `reason` says why.
  """
  gray, K = working_image(image, K)
  segments = line_segments(gray, options.min_length * max(gray.shape))[:options.max_segments]
  nothing = lambda reason: GravityEstimate(0.0, 0.0, 0.0, 0, False, reason)
  if len(segments) < 2:
    return nothing(f'{len(segments)} straight edges found')
  normals = _plane_normals(segments, K)
  lengths = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
  hypotheses = _hypotheses(segments, normals, lengths, K, options)
  if not len(hypotheses):
    return nothing(f'no two edges meet within {options.max_tilt:g}° of a level camera\'s down')
  score = lambda g: np.concatenate([_support(segments, normals, lengths, K, chunk, options)
                                    for chunk in np.array_split(g, -(-len(g) // 256))])
  support = score(hypotheses)
  best = np.argmax(support)  # the first of equals: deterministic
  g, g_support = hypotheses[best], support[best]
  rival = hypotheses @ g < np.cos(np.radians(RIVAL_DEGREES))
  confidence = float(1 - support[rival].max(initial=0) / max(g_support, 1e-9))

  # Least-squares refits on what the direction explains, kept while they explain no less
  # (a refit can be drawn towards a wrong group of edges).
  tolerance = np.radians(options.horizontal_degrees)
  for _ in range(3):
    vertical = _image_angle_errors(segments, K, g) < options.inlier_degrees
    groups = _horizontal_groups(normals, lengths, g[None], vertical[None], tolerance)[1][0]
    refined = _refine(normals, lengths, vertical, groups)
    refined_support = score(refined[None])[0]
    if not _plausible(refined[None], options)[0] or refined_support < g_support:
      break
    g, g_support = refined, refined_support
  count = int(np.sum(_image_angle_errors(segments, K, g) < options.inlier_degrees))
  pitch, roll = float(np.arcsin(np.clip(g[2], -1, 1))), float(np.arctan2(g[0], g[1]))
  reason = '' if confidence >= options.min_confidence else (
      f'another direction {RIVAL_DEGREES:g}° or more away explains the edges almost as well '
      f'(confidence {confidence:.2f} < {options.min_confidence:g})')
  return GravityEstimate(pitch, roll, confidence, count, not reason, reason)


def _support(segments, normals, lengths, K, hypotheses, options):
  """[P] evidence for each hypothesis: the length of the segments pointing at it, plus that of
  the two horizontal groups it explains best."""
  vertical = _image_angle_errors(segments, K, hypotheses) < options.inlier_degrees
  return vertical @ lengths + _horizontal_groups(normals, lengths, hypotheses, vertical,
                                                 np.radians(options.horizontal_degrees))[0]
