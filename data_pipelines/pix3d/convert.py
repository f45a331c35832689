"""Pix3D's annotations → our frames: camera, world_to_cam, object box and canonical shape.

Pix3D (pix3d.json): a model vertex v goes to the camera by X = rot_mat · v + trans_mat; the
camera looks down +Z with image right = −X and image up = +Y, so OpenCV's camera frame is
PIX3D_CAM_TO_OPENCV · X; the focal length is `focal_length` mm on a 32 mm-wide sensor, the
principal point the image centre. Models are y up with their front facing −z (x to the
object's left).

Ours (DESIGN.md): the canonical shape frame is y down with the front facing −z, so a model
vertex maps to it by MODEL_TO_CANONICAL (a proper rotation) and is then scaled into
[−0.5, 0.5]³ of its own bounding box. The world frame is the camera frame with pitch and
roll undone; Pix3D objects stand upright, so the world's down axis is the model's down axis
seen from the camera, which fixes pitch and roll; what remains is a rotation about y: the yaw.
"""
import numpy as np

from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import camera
from scenediff_jax.geometry.classes import CLASSES

PIX3D_CATEGORIES = ('bed', 'bookcase', 'chair', 'desk', 'misc', 'sofa', 'table', 'tool',
                    'wardrobe')
# Pix3D category → ours. Bookcases and wardrobes are closed storage furniture, like our
# cabinets; misc and tool have no class of ours and are skipped.
CATEGORY_TO_CLASS = {'bed': 'bed', 'chair': 'chair', 'desk': 'desk', 'sofa': 'sofa',
                     'table': 'table', 'bookcase': 'cabinet', 'wardrobe': 'cabinet'}
SENSOR_WIDTH_MM = 32.0
PIX3D_CAM_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])
MODEL_TO_CANONICAL = np.diag([-1.0, -1.0, 1.0])


def class_index(category: str) -> int:
  """Our class of a Pix3D category, or −1 when it has none."""
  name = CATEGORY_TO_CLASS.get(category)
  return CLASSES.index(name) if name else -1


def intrinsics(focal_length_mm, image_width, image_height):
  """K of a Pix3D photo, pixel centres at integer coordinates (Pix3D's at +0.5)."""
  focal = focal_length_mm * image_width / SENSOR_WIDTH_MM
  return camera.intrinsics(focal, image_width / 2 - 0.5, image_height / 2 - 0.5)


def model_box(vertices):
  """Centre and size of the model's bounding box in the canonical axes."""
  q = np.asarray(vertices, np.float64) @ MODEL_TO_CANONICAL.T
  lo, hi = q.min(0), q.max(0)
  return (lo + hi) / 2, hi - lo


def canonical_vertices(vertices):
  """Model vertices → the canonical frame [−0.5, 0.5]³ of their own box."""
  center, size = model_box(vertices)
  return (np.asarray(vertices, np.float64) @ MODEL_TO_CANONICAL.T - center) / size


def world_to_cam(rot_mat):
  """R_wc whose world y (down) is the model's down axis seen from the camera."""
  down = PIX3D_CAM_TO_OPENCV @ np.asarray(rot_mat, np.float64) @ np.array([0.0, -1.0, 0.0])
  down /= np.linalg.norm(down)
  # world_to_cam(p, r) · e_y = (sin r cos p, cos r cos p, sin p): geometry/camera.py.
  pitch = np.arcsin(np.clip(down[2], -1, 1))
  roll = np.arctan2(down[0], down[1])
  return camera.world_to_cam(pitch, roll)


def object_box(vertices, rot_mat, trans_mat, world_to_cam_rotation):
  """Our world box [7] of the posed model."""
  R = np.asarray(rot_mat, np.float64)
  t = np.asarray(trans_mat, np.float64)
  to_world = world_to_cam_rotation.T @ PIX3D_CAM_TO_OPENCV  # camera (Pix3D) → world
  # canonical-axes point q ↦ world: to_world · (R · MODEL_TO_CANONICALᵀ · q + t)
  G = to_world @ R @ MODEL_TO_CANONICAL.T
  yaw = np.arctan2(G[0, 2], G[0, 0])  # G = R_y(yaw) because its y axis is the world's
  center, size = model_box(vertices)
  world_center = G @ center + to_world @ t
  return np.concatenate([world_center, size, [boxes_lib.wrap_angle(yaw)]])

