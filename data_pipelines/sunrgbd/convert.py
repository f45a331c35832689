"""One Total3D/Im3D SUN RGB-D pickle → one scene record in our conventions (DESIGN.md).

Their pickles (written by Total3D's utils/generate_data.py) hold `rgb_img`, `depth_map`
(metres, z along the optical axis, 0 = missing), `camera` {K, pitch_cls, pitch_reg,
roll_cls, roll_reg}, `layout` {bdb3D, ...} and `boxes` {size_cls (NYU-40 id), bdb2D_pos,
bdb3D, mask, ...}. Their world frame is "toward-up-right": origin at the camera, x the
camera's forward direction on the floor plane, y up, z right. Ours is (right, down,
forward), so a point maps by TUR_TO_OURS, a proper rotation that is its own inverse.

Exact conversions:
- camera: their camera-to-world rotation from pitch/roll (bin centre + residual × bin
  width) is R = [[cos p, −sin p cos r, sin p sin r], [sin p, cos p cos r, −cos p sin r],
  [0, sin r, cos r]], whose columns are the camera's toward/up/right axes; their camera
  axes go to OpenCV's by the same TUR_TO_OURS, so world_to_cam = T · Rᵀ · T.
- boxes: from the 8 `bdb3D` corners. Their corner k is centroid + Σ sᵢ·coeffsᵢ·basisᵢ with
  basis rows (lateral, up, front) and coeffs half extents; ours are CORNER_SIGNS over the
  box's (x, y down, z = −front) axes with full extents, so ours[j] = theirs[CORNER_ORDER[j]].
  Yaw comes from the front axis, so a mirrored (`_flip`) sample keeps its front.
- classes: NYU-40 ids of our 10 classes map by name (night_stand → nightstand); objects of
  every other class are dropped (their pixels stay background in the instance map).
"""
import numpy as np

from data_pipelines.resize import resize_view
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry.classes import CLASSES

NYU40_CLASSES = (
    'void', 'wall', 'floor', 'cabinet', 'bed', 'chair', 'sofa', 'table', 'door', 'window',
    'bookshelf', 'picture', 'counter', 'blinds', 'desk', 'shelves', 'curtain', 'dresser',
    'pillow', 'mirror', 'floor_mat', 'clothes', 'ceiling', 'books', 'refridgerator',
    'television', 'paper', 'towel', 'shower_curtain', 'box', 'whiteboard', 'person',
    'night_stand', 'toilet', 'sink', 'lamp', 'bathtub', 'bag', 'otherstructure',
    'otherfurniture', 'otherprop')
_RENAMED = {'night_stand': 'nightstand'}
# NYU-40 id → our class index, or −1 (dropped).
NYU40_TO_CLASS = np.array([CLASSES.index(_RENAMED.get(n, n)) if _RENAMED.get(n, n) in CLASSES
                           else -1 for n in NYU40_CLASSES], np.int32)

PITCH_BINS = np.radians([[-60.0, -20.0], [-20.0, 20.0]])
ROLL_BINS = np.radians([[-20.0, 0.0], [0.0, 20.0]])

TUR_TO_OURS = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
CORNER_ORDER = np.array([1, 2, 3, 0, 5, 6, 7, 4])  # ours[j] = theirs[CORNER_ORDER[j]]


def from_bins(bins, cls, residual) -> float:
  lo, hi = bins[int(cls)]
  return float((lo + hi) / 2 + residual * (hi - lo))


def their_camera_to_world(pitch, roll):
  cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
  return np.array([[cp, -sp * cr, sp * sr], [sp, cp * cr, -cp * sr], [0.0, sr, cr]])


def world_to_cam(camera) -> np.ndarray:
  """Our R_wc from their `camera` dict (pitch/roll bins and residuals)."""
  pitch = from_bins(PITCH_BINS, camera['pitch_cls'], camera['pitch_reg'])
  roll = from_bins(ROLL_BINS, camera['roll_cls'], camera['roll_reg'])
  return TUR_TO_OURS @ their_camera_to_world(pitch, roll).T @ TUR_TO_OURS


def box_from_their_corners(corners) -> np.ndarray:
  """Their 8 corners [8, 3] (toward-up-right) → our box [7]."""
  ours = (np.asarray(corners, np.float64) @ TUR_TO_OURS.T)[CORNER_ORDER]
  center = ours.mean(0)
  axes = np.einsum('kc,ka->ac', ours - center, boxes_lib.CORNER_SIGNS) / 4  # full-extent vectors
  size = np.linalg.norm(axes, axis=-1)
  z_axis = axes[2]  # = −front; R_y(θ)·e_z = (sin θ, 0, cos θ)
  yaw = boxes_lib.wrap_angle(np.arctan2(z_axis[0], z_axis[2]))
  return np.concatenate([center, size, [yaw]])


def instance_map(masks, keep, distances, shape):
  """Full-image instance map of the kept objects from their mask crops; where masks overlap
  the nearer object wins (painted last)."""
  instances = np.full(shape, -1, np.int32)
  for new_index in sorted(range(len(keep)), key=lambda j: -distances[j]):
    mask = masks[keep[new_index]]
    if mask is None:
      continue
    x1, y1, x2, y2 = (int(v) for v in mask['msk_bdb'])
    crop = np.asarray(mask['msk'], bool)[:y2 - y1 + 1, :x2 - x1 + 1]
    region = instances[y1:y1 + crop.shape[0], x1:x1 + crop.shape[1]]
    region[crop[:region.shape[0], :region.shape[1]]] = new_index
  return instances


def flipped_intrinsics(K):
  """K of a mirrored copy, corrected: Total3D writes cx' = W − cx, but mirroring maps pixel
  column c to W − 1 − c, so the principal point must go to W − 1 − cx (one pixel less)."""
  K = np.array(K, np.float64)
  K[0, 2] -= 1.0
  return K


def convert(data: dict, size, flipped: bool = False) -> dict:
  """A Total3D pickle's dict → our record at image size (H, W); None without kept objects.
  `flipped`: the pickle is one of Total3D's mirrored copies (`<id>_flip.pkl`)."""
  boxes = data['boxes']
  classes = NYU40_TO_CLASS[np.asarray(boxes['size_cls'], np.int64)]
  keep = np.nonzero(classes >= 0)[0]
  if len(keep) == 0:
    return None
  box3d = np.stack([box_from_their_corners(boxes['bdb3D'][k]) for k in keep])
  image = np.asarray(data['rgb_img'], np.uint8)
  masks = list(boxes['mask']) if 'mask' in boxes else [None] * len(classes)
  instances = instance_map(masks, keep, np.linalg.norm(box3d[:, :3], axis=-1), image.shape[:2])
  K = np.asarray(data['camera']['K'], np.float64)
  if flipped:
    K = flipped_intrinsics(K)
  view = resize_view(image, K, size,
                     depth=np.asarray(data['depth_map'], np.float32), instances=instances,
                     bbox2d=np.asarray(boxes['bdb2D_pos'], np.float64)[keep])
  visible = np.bincount(view['instances'].reshape(-1) + 1, minlength=len(keep) + 1)[1:]
  return {
      'image': view['image'],
      'depth': view['depth'],
      'instances': view['instances'],
      'K': view['K'].astype(np.float32),
      'world_to_cam': world_to_cam(data['camera']).astype(np.float32),
      'layout': box_from_their_corners(data['layout']['bdb3D']).astype(np.float32),
      'objects': {
          'class': classes[keep].astype(np.int32),
          'bbox2d': view['bbox2d'].astype(np.float32),
          'box3d': box3d.astype(np.float32),
          'shape_id': np.full(len(keep), -1, np.int32),  # SUN RGB-D has no shape ground truth
          'visible_pixels': visible.astype(np.int32),
      },
  }
