"""Tiny datasets in the exact real formats, written with the sources' own conventions (not
ours), so that the builders' conversions are checked against an independent description.

SUN RGB-D as Total3D/Im3D preprocess it: one pickle per image, toward-up-right world frame,
basis rows (lateral, up, front), half-extent coeffs, corners in Total3D's order, pitch/roll
as bins + residuals, masks as crops of their own tight box; depth and masks come from
ray-casting the boxes. Pix3D: pix3d.json with img/, mask/ and .obj models, X = R·v + t in a
camera that looks down +Z with image right = −X and up = +Y, focal length in mm of a 32 mm
sensor, pixel centres at +0.5.
"""
import json
import os
import pickle

import numpy as np
from PIL import Image, ImageDraw
from scipy.spatial import ConvexHull
import trimesh

# --- SUN RGB-D (Total3D) ---------------------------------------------------------------
PITCH_BINS = np.radians([[-60.0, -20.0], [-20.0, 20.0]])
ROLL_BINS = np.radians([[-20.0, 0.0], [0.0, 20.0]])
# Total3D's corner order: signs along basis rows (lateral, up, front).
TOTAL3D_CORNER_SIGNS = np.array([[-1, 1, -1], [-1, 1, 1], [1, 1, 1], [1, 1, -1],
                                 [-1, -1, -1], [-1, -1, 1], [1, -1, 1], [1, -1, -1]], float)
NYU = {'cabinet': 3, 'bed': 4, 'chair': 5, 'sofa': 6, 'table': 7, 'door': 8, 'desk': 14,
       'night_stand': 32, 'lamp': 35}


def to_bins(bins, value):
  centres = bins.mean(1)
  cls = int(np.argmin(np.abs(value - centres)))
  return cls, float((value - centres[cls]) / (bins[cls, 1] - bins[cls, 0]))


def total3d_camera_to_world(pitch, roll):
  """Columns: the camera's toward, up and right axes in the toward-up-right world."""
  cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
  return np.array([[cp, -sp * cr, sp * sr], [sp, cp * cr, -cp * sr], [0, sr, cr]])


def object_basis(theta):
  return np.array([[np.cos(theta), 0, -np.sin(theta)], [0, 1, 0],
                   [np.sin(theta), 0, np.cos(theta)]])


def total3d_corners(centroid, basis, coeffs):
  return centroid + (TOTAL3D_CORNER_SIGNS * coeffs) @ basis


def _ray_cast(origin_dirs, centroid, basis, coeffs):
  """Distance along unit rays (toward-up-right world, from the origin) to a box; inf on miss."""
  local_dirs = origin_dirs @ basis.T  # components along the box's rows
  local_origin = -(centroid @ basis.T)
  with np.errstate(divide='ignore', invalid='ignore'):
    t1 = (-coeffs - local_origin) / local_dirs
    t2 = (coeffs - local_origin) / local_dirs
  near = np.nanmax(np.minimum(t1, t2), -1)
  far = np.nanmin(np.maximum(t1, t2), -1)
  return np.where((near <= far) & (near > 0), near, np.inf)


def sunrgbd_scene(rng, objects, width=160, height=120, focal=120.0, pitch=-0.2, roll=0.05,
                  flip=False):
  """A Total3D pickle dict for `objects` = [(nyu_name, centroid, theta, coeffs)]."""
  K = np.array([[focal, 0, width / 2 - 0.3], [0, focal, height / 2 + 0.2], [0, 0, 1]])
  R = total3d_camera_to_world(pitch, roll)
  rows, cols = np.mgrid[0:height, 0:width]
  x_cv = (cols - K[0, 2]) / K[0, 0]
  y_cv = (rows - K[1, 2]) / K[1, 1]
  # OpenCV camera (x right, y down, z forward) → toward-up-right camera → world.
  dirs_cam = np.stack([np.ones_like(x_cv), -y_cv, x_cv], -1)
  dirs = dirs_cam @ R.T
  z_per_length = 1.0 / np.linalg.norm(dirs, axis=-1)  # z-depth = t · z_per_length
  dirs_unit = dirs * z_per_length[..., None]
  hits = np.stack([_ray_cast(dirs_unit.reshape(-1, 3), np.asarray(c, float), object_basis(t),
                             np.asarray(s, float)) for _, c, t, s in objects]).reshape(
                                 len(objects), height, width)
  nearest = np.argmin(hits, 0)
  t = np.min(hits, 0)
  wall = 6.0
  depth = np.where(np.isfinite(t), t, wall) * z_per_length
  instances = np.where(np.isfinite(t), nearest, -1)
  image = rng.integers(0, 255, (height, width, 3), np.uint8)
  boxes = {k: [] for k in ('size_cls', 'bdb3D', 'bdb2D_pos', 'mask', 'ori_cls', 'ori_reg')}
  for k, (name, centroid, theta, coeffs) in enumerate(objects):
    ys, xs = np.nonzero(instances == k)
    boxes['size_cls'].append(NYU[name])
    boxes['bdb3D'].append(total3d_corners(np.asarray(centroid, float), object_basis(theta),
                                          np.asarray(coeffs, float)))
    boxes['ori_cls'].append(0)
    boxes['ori_reg'].append(0.0)
    if len(xs):
      x1, y1, x2, y2 = xs.min(), ys.min(), xs.max(), ys.max()
      boxes['bdb2D_pos'].append([x1, y1, x2, y2])
      boxes['mask'].append({'msk_bdb': [x1, y1, x2, y2], 'class_id': NYU[name],
                            'msk': instances[y1:y2 + 1, x1:x2 + 1] == k})
    else:
      boxes['bdb2D_pos'].append([0, 0, 1, 1])
      boxes['mask'].append(None)
  room_centroid = np.array([2.0, 0.2, 0.3])
  room_basis = np.array([[np.sin(0.3), 0, np.cos(0.3)], [0, 1, 0], [-np.cos(0.3), 0, np.sin(0.3)]])
  layout_corners = total3d_corners(room_centroid, room_basis, np.array([3.0, 1.4, 2.5]))
  if flip:  # Total3D's mirrored copies: image, K, roll, and the right coordinate of boxes
    image, depth, instances = image[:, ::-1], depth[:, ::-1], instances[:, ::-1]
    K[0, 2] = width - K[0, 2]
    roll = -roll
    boxes['bdb3D'] = [c * [1, 1, -1] for c in boxes['bdb3D']]
    layout_corners = layout_corners * [1, 1, -1]
    for b, m in zip(boxes['bdb2D_pos'], boxes['mask']):
      b[0], b[2] = width - 1 - b[2], width - 1 - b[0]
      if m is not None:
        x1, x2 = m['msk_bdb'][0], m['msk_bdb'][2]
        m['msk_bdb'] = [width - 1 - x2, m['msk_bdb'][1], width - 1 - x1, m['msk_bdb'][3]]
        m['msk'] = m['msk'][:, ::-1]
  pitch_cls, pitch_reg = to_bins(PITCH_BINS, pitch)
  roll_cls, roll_reg = to_bins(ROLL_BINS, roll)
  mask_array = np.empty(len(objects), object)
  mask_array[:] = boxes.pop('mask')
  return {
      'rgb_img': np.ascontiguousarray(image),
      'depth_map': np.ascontiguousarray(depth).astype(np.float32),
      'camera': {'K': K, 'pitch_cls': pitch_cls, 'pitch_reg': pitch_reg, 'roll_cls': roll_cls,
                 'roll_reg': roll_reg},
      'layout': {'bdb3D': layout_corners, 'ori_cls': 0, 'ori_reg': 0.0,
                 'centroid_reg': np.zeros(3), 'coeffs_reg': np.zeros(3)},
      'boxes': {**{k: np.array(v) for k, v in boxes.items()}, 'mask': mask_array,
                'size_reg': np.zeros((len(objects), 3)), 'delta_2D': np.zeros((len(objects), 2)),
                'centroid_cls': np.zeros(len(objects), int),
                'centroid_reg': np.zeros(len(objects))},
      'sequence_id': None,  # filled by write_sunrgbd
  }


SUNRGBD_SCENES = {  # id: objects (NYU name, centroid (toward, up, right), theta, half extents)
    1: [('bed', [3.0, -0.8, 0.4], 0.4, [0.8, 0.4, 1.0]),
        ('night_stand', [2.4, -1.0, -0.9], -1.2, [0.25, 0.3, 0.2]),
        ('door', [4.0, -0.2, -1.5], 0.0, [0.5, 1.0, 0.05])],
    2: [('chair', [2.0, -0.9, -0.3], 2.5, [0.3, 0.45, 0.3]),
        ('table', [2.8, -1.0, 0.5], 0.1, [0.7, 0.38, 0.45]),
        ('lamp', [3.5, -0.5, 1.2], 0.0, [0.15, 0.4, 0.15])],
    3: [('door', [3.0, -0.2, 0.0], 0.0, [0.5, 1.0, 0.05])],  # nothing of ours: skipped
    5051: [('sofa', [3.2, -1.0, -0.2], -0.3, [0.9, 0.4, 0.5]),
           ('cabinet', [2.6, -0.7, 1.1], 1.9, [0.6, 0.6, 0.3])],
}


def write_sunrgbd(root, seed=0):
  """Total3D's data/sunrgbd layout under `root`; returns {file name: pickle dict}."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'sunrgbd_train_test_data'), exist_ok=True)
  os.makedirs(os.path.join(root, 'splits'), exist_ok=True)
  written, train, test = {}, [], []
  for scene_id, objects in SUNRGBD_SCENES.items():
    for flip in (False, True) if scene_id > 5050 else (False,):
      data = sunrgbd_scene(rng, objects, flip=flip)
      data['sequence_id'] = scene_id
      name = f'{scene_id}_flip.pkl' if flip else f'{scene_id}.pkl'
      with open(os.path.join(root, 'sunrgbd_train_test_data', name), 'wb') as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
      written[name] = data
      (train if scene_id > 5050 or scene_id == 1 else test).append(
          f'./data/sunrgbd/sunrgbd_train_test_data/{name}')
  for split, names in (('train', train), ('test', test)):
    with open(os.path.join(root, 'splits', f'{split}.json'), 'w') as f:
      json.dump(names, f)
  return written


# --- Pix3D ------------------------------------------------------------------------------
def _model(extents, chamfer):
  """A convex, front/back-asymmetric model in Pix3D's frame (y up, front −z), not centred."""
  box = trimesh.creation.box(extents)
  vertices = box.vertices.copy()
  back_top = (vertices[:, 2] > 0) & (vertices[:, 1] > 0)
  vertices[back_top, 2] -= chamfer  # the back top edge is cut: the shape has a front
  return trimesh.convex.convex_hull(vertices + [0.05, 0.1, -0.02])


def rotation(yaw, pitch, roll):
  """Pix3D rot_mat of an upright model seen from a camera with this pitch and roll."""
  cy, sy = np.cos(yaw), np.sin(yaw)
  Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  cp, sp = np.cos(pitch), np.sin(pitch)
  Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
  cr, sr = np.cos(roll), np.sin(roll)
  Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return Rz @ Rx @ Ry


def pix3d_project(points_model, rot_mat, trans_mat, focal_mm, width, height):
  """Pix3D's projection: pixels with centres at +0.5."""
  X = points_model @ np.asarray(rot_mat).T + trans_mat
  f = focal_mm * width / 32.0
  return np.stack([width / 2 - f * X[:, 0] / X[:, 2], height / 2 - f * X[:, 1] / X[:, 2]], -1)


PIX3D_ENTRIES = [  # category, model, size (W, H), yaw, pitch, roll, distance, focal mm
    ('chair', 'model/chair/A/model.obj', (200, 150), 0.5, 0.3, 0.05, 2.2, 35.0),
    ('chair', 'model/chair/A/model.obj', (160, 200), -2.0, 0.2, -0.08, 1.8, 40.0),
    ('table', 'model/table/B/model.obj', (220, 160), 1.2, 0.4, 0.0, 2.5, 32.0),
    ('misc', 'model/misc/C/model.obj', (100, 100), 0.0, 0.1, 0.0, 2.0, 32.0),  # skipped
    ('wardrobe', 'model/wardrobe/D/model.obj', (180, 180), 3.0, 0.15, 0.03, 3.0, 30.0),
]
PIX3D_MODELS = {'model/chair/A/model.obj': ((0.5, 0.9, 0.55), 0.2),
                'model/table/B/model.obj': ((1.0, 0.7, 0.6), 0.15),
                'model/misc/C/model.obj': ((0.4, 0.4, 0.4), 0.1),
                'model/wardrobe/D/model.obj': ((1.0, 1.8, 0.6), 0.3)}


def write_pix3d(root, seed=0):
  """pix3d.json, img/, mask/ and model/ under `root`; returns the json entries."""
  rng = np.random.default_rng(seed)
  meshes = {}
  for path, (extents, chamfer) in PIX3D_MODELS.items():
    meshes[path] = _model(extents, chamfer)
    os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
    meshes[path].export(os.path.join(root, path))
  entries = []
  for i, (category, model, (w, h), yaw, pitch, roll, distance, focal) in enumerate(PIX3D_ENTRIES):
    R = rotation(yaw, pitch, roll)
    t = np.array([0.05, -0.1, distance])
    pixels = pix3d_project(np.asarray(meshes[model].vertices), R, t, focal, w, h)
    mask = Image.new('L', (w, h), 0)
    # A convex model's silhouette is the convex hull of its projected vertices.
    ring = pixels[ConvexHull(pixels).vertices]
    ImageDraw.Draw(mask).polygon([tuple(p) for p in ring], fill=255)
    mask_array = np.asarray(mask)
    ys, xs = np.nonzero(mask_array)
    img_path = f'img/{category}/{i:04d}.png'
    mask_path = f'mask/{category}/{i:04d}.png'
    for p in (img_path, mask_path):
      os.makedirs(os.path.join(root, os.path.dirname(p)), exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(os.path.join(root, img_path))
    mask.save(os.path.join(root, mask_path))
    entries.append({
        'img': img_path, 'category': category, 'img_size': [w, h], '2d_keypoints': [],
        'mask': mask_path, 'img_source': 'self-taken', 'model': model, 'model_raw': None,
        'model_source': 'self-scanned',
        '3d_keypoints': model.replace('model.obj', '3d_keypoints.txt'),
        'voxel': model.replace('model.obj', 'voxel.mat'), 'rot_mat': R.tolist(),
        'trans_mat': t.tolist(), 'focal_length': focal, 'cam_position': (-R.T @ t).tolist(),
        'inplane_rotation': 0.0, 'truncated': False, 'occluded': False,
        'slightly_occluded': False,
        'bbox': [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]})
  with open(os.path.join(root, 'pix3d.json'), 'w') as f:
    json.dump(entries, f)
  return entries, meshes
