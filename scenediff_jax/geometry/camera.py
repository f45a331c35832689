"""Pinhole camera: intrinsics, world_to_cam from pitch/roll and back, projection, depth maps.

Frames (DESIGN.md): the camera frame is OpenCV's (x right, y down, z forward). The world
frame W is the camera frame with pitch and roll undone: origin at the camera centre, y along
gravity (down), z the camera's forward direction projected on the floor, x = y × z.
X_c = R_wc · X_w with R_wc = `world_to_cam`.

Angle signs, in radians:
  pitch > 0: the camera looks down, toward the floor (forward in W is (0, sin p, cos p)).
  roll  > 0: the camera turns about its forward axis so that its x axis tips toward the
             floor (the image content appears rotated counter-clockwise).
  world_to_cam(pitch, roll) = R_z(-roll) · R_x(pitch),  cam_to_world = R_x(-pitch) · R_z(roll).
"""
import numpy as np

from scenediff_jax.geometry.backend import namespace


def intrinsics(focal, cx, cy, focal_y=None):
  """3×3 K for focal length(s) and principal point, in pixels."""
  fy = focal if focal_y is None else focal_y
  return np.array([[focal, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)


def scale_intrinsics(K, scale_x, scale_y=None):
  """K of the same camera after resizing the image by (scale_x, scale_y).

  Pixel centres sit at integer coordinates, so a pixel edge at -0.5 maps to -0.5.
  """
  scale_y = scale_x if scale_y is None else scale_y
  xp = namespace(K)
  S = xp.asarray([[scale_x, 0, 0.5 * (scale_x - 1)], [0, scale_y, 0.5 * (scale_y - 1)], [0, 0, 1]],
                 dtype=K.dtype)
  return S @ K


def _rot_x(a, xp):
  c, s = xp.cos(a), xp.sin(a)
  o, z = xp.ones_like(a), xp.zeros_like(a)
  return xp.stack([xp.stack([o, z, z], -1), xp.stack([z, c, -s], -1),
                   xp.stack([z, s, c], -1)], -2)


def _rot_z(a, xp):
  c, s = xp.cos(a), xp.sin(a)
  o, z = xp.ones_like(a), xp.zeros_like(a)
  return xp.stack([xp.stack([c, -s, z], -1), xp.stack([s, c, z], -1),
                   xp.stack([z, z, o], -1)], -2)


def world_to_cam(pitch, roll):
  """R_wc for camera pitch and roll (broadcasts over leading dimensions)."""
  xp = namespace(pitch, roll)
  pitch, roll = xp.asarray(pitch, dtype=float), xp.asarray(roll, dtype=float)
  return _rot_z(-roll, xp) @ _rot_x(pitch, xp)


def pitch_roll(world_to_cam_rotation):
  """Inverse of `world_to_cam`: (pitch, roll) of a rotation R_wc."""
  xp = namespace(world_to_cam_rotation)
  R = world_to_cam_rotation
  # Row 2 of R_wc is the forward axis in W: (0, sin p, cos p). Row 0 (camera x in W) is
  # R_z(roll)ᵀ's first row rotated by R_x(pitch): (cos r, sin r cos p, -sin r sin p).
  pitch = xp.arctan2(R[..., 2, 1], R[..., 2, 2])
  roll = xp.arctan2(R[..., 0, 1] * xp.cos(pitch) - R[..., 0, 2] * xp.sin(pitch), R[..., 0, 0])
  return pitch, roll


def _apply(matrix, vectors):
  """matrix [..., 3, 3] · vectors [..., 3], broadcasting the leading dimensions."""
  return namespace(matrix, vectors).einsum('...ij,...j->...i', matrix, vectors)


def world_to_camera_points(points, world_to_cam_rotation):
  """X_c = R_wc · X_w for points [..., 3] (the world and camera share their origin)."""
  return _apply(world_to_cam_rotation, points)


def camera_to_world_points(points, world_to_cam_rotation):
  xp = namespace(world_to_cam_rotation)
  return _apply(xp.swapaxes(world_to_cam_rotation, -1, -2), points)


def project(points_world, K, world_to_cam_rotation):
  """World points [..., 3] → (pixels [..., 2], depth z along the camera axis [...]).

  K [..., 3, 3] and world_to_cam_rotation [..., 3, 3] broadcast against the points.
  """
  xp = namespace(points_world, K, world_to_cam_rotation)
  pc = world_to_camera_points(points_world, world_to_cam_rotation)
  z = pc[..., 2]
  uvw = _apply(K, pc)
  safe_z = xp.where(xp.abs(z) > 1e-12, z, 1e-12)
  return uvw[..., :2] / safe_z[..., None], z


def back_project(pixels, depth, K, world_to_cam_rotation):
  """Pixels [..., 2] with depth z [...] → world points [..., 3]; inverse of `project`."""
  rays = pixel_rays(pixels, K)
  return camera_to_world_points(rays * depth[..., None], world_to_cam_rotation)


def pixel_rays(pixels, K):
  """Camera-frame rays K⁻¹[u, v, 1] (z = 1) through pixels [..., 2]."""
  xp = namespace(pixels, K)
  fx, fy, cx, cy, skew = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2], K[..., 0, 1]
  y = (pixels[..., 1] - cy) / fy
  x = (pixels[..., 0] - cx - skew * y) / fx
  return xp.stack([x, y, xp.ones_like(x)], -1)


def pixel_grid(height, width, xp=np):
  """Pixel centres [H, W, 2] as (u, v) = (column, row)."""
  v, u = xp.meshgrid(xp.arange(height, dtype=xp.float32), xp.arange(width, dtype=xp.float32),
                     indexing='ij')
  return xp.stack([u, v], -1)


def depth_to_points(depth, K, world_to_cam_rotation, mask=None):
  """Depth map [H, W] (metres, 0 = none) → world points [M, 3] of the valid pixels.

  With `mask` [H, W] only those pixels are used. numpy only (the output size is dynamic);
  models back-project fixed-size pixel samples with `back_project` instead.
  """
  depth = np.asarray(depth)
  valid = depth > 0 if mask is None else (depth > 0) & np.asarray(mask, bool)
  rows, cols = np.nonzero(valid)
  pixels = np.stack([cols, rows], -1).astype(np.float64)
  return back_project(pixels, depth[rows, cols].astype(np.float64), np.asarray(K, np.float64),
                      np.asarray(world_to_cam_rotation, np.float64))


def points_to_depth(points_world, K, world_to_cam_rotation, height, width):
  """Splats world points into a depth map [H, W] keeping the nearest (0 where none)."""
  uv, z = project(np.asarray(points_world, np.float64), K, world_to_cam_rotation)
  cols, rows = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
  keep = (z > 0) & (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
  flat = np.full(height * width, np.inf)
  np.minimum.at(flat, rows[keep] * width + cols[keep], z[keep])
  flat[np.isinf(flat)] = 0.0
  return flat.reshape(height, width)
