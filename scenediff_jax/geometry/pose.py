"""The diffusion pose vector of an object and its conversion to and from a 3D box.

Pose vector (7 numbers, after Total3D/CooP and the paper):
  [δ_u, δ_v, dist, w, h, d, yaw]
The box centre lies at Euclidean distance `dist` from the camera centre along the camera ray
through the pixel (2D box centre + δ). δ is measured in units of the image size
(δ_u = Δu / width, δ_v = Δv / height), so poses do not depend on the image resolution.
Size and yaw are the box's own (world frame, see boxes.py). The box centre must lie in front
of the camera (z > 0 in the camera frame): a centre behind it has no ray through the image.
All functions broadcast:
boxes [..., 7], bbox2d [..., 4] (x1, y1, x2, y2 pixels), K and world_to_cam [..., 3, 3],
image_size [..., 2] as (width, height).
"""
from scenediff_jax.geometry import camera
from scenediff_jax.geometry.backend import namespace

POSE_FIELDS = ('delta_u', 'delta_v', 'distance', 'width', 'height', 'depth', 'yaw')


def bbox2d_center(bbox2d):
  return 0.5 * (bbox2d[..., :2] + bbox2d[..., 2:4])


def box_to_pose(boxes, bbox2d, K, world_to_cam, image_size):
  """3D boxes → pose vectors (inverse of `pose_to_box`)."""
  xp = namespace(boxes, bbox2d, K, world_to_cam)
  center = boxes[..., :3]
  pixel, _ = camera.project(center, K, world_to_cam)
  delta = (pixel - bbox2d_center(bbox2d)) / image_size
  distance = xp.linalg.norm(center, axis=-1, keepdims=True)
  return xp.concatenate([delta, distance, boxes[..., 3:7]], -1)


def pose_to_box(poses, bbox2d, K, world_to_cam, image_size):
  """Pose vectors → 3D boxes [..., 7]."""
  xp = namespace(poses, bbox2d, K, world_to_cam)
  pixel = bbox2d_center(bbox2d) + poses[..., :2] * image_size
  ray = camera.camera_to_world_points(camera.pixel_rays(pixel, K), world_to_cam)
  ray = ray / xp.linalg.norm(ray, axis=-1, keepdims=True)
  center = ray * poses[..., 2:3]
  return xp.concatenate([center, poses[..., 3:7]], -1)
