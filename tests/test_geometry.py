"""Conventions of scenediff_jax.geometry, pinned by round trips and known answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax import geometry
from scenediff_jax.geometry import boxes, camera

RNG = np.random.default_rng(0)


def random_boxes(n, rng=RNG):
  center = rng.uniform([-3, -1, 1], [3, 1.5, 6], (n, 3))
  size = rng.uniform(0.2, 2.5, (n, 3))
  yaw = rng.uniform(-np.pi, np.pi, n)
  return np.concatenate([center, size, yaw[:, None]], -1)


def test_world_to_cam_is_a_rotation_and_round_trips_pitch_roll():
  pitch = RNG.uniform(-0.6, 0.6, 50)
  roll = RNG.uniform(-0.3, 0.3, 50)
  R = geometry.world_to_cam(pitch, roll)
  np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), np.broadcast_to(np.eye(3), R.shape),
                             atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
  p, r = geometry.pitch_roll(R)
  np.testing.assert_allclose(p, pitch, atol=1e-12)
  np.testing.assert_allclose(r, roll, atol=1e-12)


def test_pitch_sign_looking_down_sees_the_floor():
  # y points down in the world: a floor point ahead projects below the image centre at
  # pitch 0, and to the centre when the camera pitches down onto it.
  K = geometry.intrinsics(500.0, 320.0, 240.0)
  floor_point = np.array([0.0, 1.5, 1.5])  # 1.5 m below, 1.5 m ahead: 45° down
  uv, z = geometry.project(floor_point, K, geometry.world_to_cam(0.0, 0.0))
  assert uv[1] > 240 and z > 0
  uv, _ = geometry.project(floor_point, K, geometry.world_to_cam(np.pi / 4, 0.0))
  np.testing.assert_allclose(uv, [320, 240], atol=1e-9)


def test_roll_sign_tips_the_camera_x_axis_down():
  R = geometry.world_to_cam(0.0, 0.1)
  x_axis_in_world = R[0]
  assert x_axis_in_world[1] > 0  # the camera's right points a little toward the floor


def test_project_back_project_round_trip_and_depth_maps():
  K = geometry.intrinsics(211.8, 127.5, 95.5)
  R = geometry.world_to_cam(0.3, -0.05)
  pixels = RNG.uniform([0, 0], [256, 192], (100, 2))
  depth = RNG.uniform(0.5, 8, 100)
  points = geometry.back_project(pixels, depth, K, R)
  uv, z = geometry.project(points, K, R)
  np.testing.assert_allclose(uv, pixels, atol=1e-9)
  np.testing.assert_allclose(z, depth, atol=1e-12)
  # A depth map → points → depth map round trip at integer pixel centres.
  depth_map = RNG.uniform(1, 5, (12, 16))
  depth_map[3, 4] = 0  # no measurement
  points = geometry.depth_to_points(depth_map, K, R)
  assert len(points) == depth_map.size - 1
  np.testing.assert_allclose(geometry.points_to_depth(points, K, R, 12, 16), depth_map, atol=1e-9)


def test_scale_intrinsics_keeps_pixel_centres_on_the_same_rays():
  K = geometry.intrinsics(529.5, 319.5, 239.5)
  K2 = geometry.scale_intrinsics(K, 0.4)
  # The image edge (−0.5) and the centre of the 640-wide image map to the same rays.
  for u, u2 in ((-0.5, -0.5), (319.5, 127.5), (639.5, 255.5)):
    ray = camera.pixel_rays(np.array([u, 100.0]), K)
    ray2 = camera.pixel_rays(np.array([u2, 0.4 * 100.5 - 0.5]), K2)
    np.testing.assert_allclose(ray, ray2, atol=1e-12)


def test_box_corners_round_trip_and_known_answer():
  b = random_boxes(64)
  np.testing.assert_allclose(geometry.box_from_corners(geometry.box_corners(b)), b, atol=1e-9)
  # Known answer: yaw 90° turns the box's x axis onto world −z (R_y(θ)·e_x = (cos θ, 0, −sin θ)).
  box = np.array([1.0, 0.0, 5.0, 2.0, 1.0, 0.5, np.pi / 2])
  corners = geometry.box_corners(box)
  np.testing.assert_allclose(corners[1] - corners[0], [0, 0, -2], atol=1e-12)  # along box x
  np.testing.assert_allclose(corners[4] - corners[0], [0, 1, 0], atol=1e-12)   # y: top → bottom
  np.testing.assert_allclose(corners.mean(0), box[:3], atol=1e-12)


def test_canonical_front_faces_the_camera_at_yaw_zero():
  box = np.array([0.0, 0.0, 4.0, 1.0, 1.0, 1.0, 0.0])
  front = geometry.canonical_to_world(np.array([[0, 0, -0.5]]), box)[0]
  assert np.linalg.norm(front) < np.linalg.norm(box[:3])  # the −z face is nearer the camera


def test_points_in_box_known_points_at_a_yaw():
  # A 2 m (x) × 1 m × 0.4 m (z) box turned by 90°: its long side now runs along world z.
  box = np.array([0.0, 0.0, 5.0, 2.0, 1.0, 0.4, np.pi / 2])
  points = np.array([[0, 0, 5.9], [0, 0, 4.1], [0.15, 0, 5], [0.3, 0, 5], [0.9, 0, 5]])
  np.testing.assert_array_equal(geometry.points_in_box(points, box), [1, 1, 1, 0, 0])
  # The canonical +x end lies toward world −z (R_y(θ)·e_x = (cos θ, 0, −sin θ)).
  np.testing.assert_allclose(geometry.canonical_to_world(np.array([[0.5, 0, 0]]), box)[0],
                             [0, 0, 4], atol=1e-12)


def test_points_in_box_against_monte_carlo_volume():
  box = np.array([0.3, -0.2, 3.0, 1.2, 0.8, 0.5, 0.7])
  points = RNG.uniform(-1.5, 1.5, (200_000, 3)) + box[:3]
  inside = geometry.points_in_box(points, box)
  volume = inside.mean() * 3.0 ** 3
  assert abs(volume - 1.2 * 0.8 * 0.5) < 0.02
  grown = geometry.points_in_box(points, box, inflate=0.1).mean() * 27
  assert abs(grown - 1.2 * 0.8 * 0.5 * 1.1 ** 3) < 0.025


def test_wrap_angle_range():
  a = np.array([-np.pi, np.pi, 3 * np.pi / 2, -7.0, 0.5])
  w = geometry.wrap_angle(a)
  assert np.all(w >= -np.pi) and np.all(w < np.pi)
  np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
  np.testing.assert_allclose(w[:2], [-np.pi, -np.pi])


def test_transform_boxes_moves_corners_rigidly():
  b = random_boxes(10)
  yaw, t = 0.8, np.array([0.5, -0.1, 2.0])
  moved = geometry.transform_boxes(b, yaw, t)
  expected = geometry.box_corners(b) @ geometry.rotation_y(yaw).T + t
  np.testing.assert_allclose(geometry.box_corners(moved), expected, atol=1e-9)


def _camera_scene(n=32):
  K = geometry.intrinsics(211.8, 127.5, 95.5)
  R = geometry.world_to_cam(0.25, 0.04)
  b = random_boxes(n)
  # 2D boxes around each projected centre (any box works for the round trip).
  uv, _ = geometry.project(b[:, :3], K, R)
  bbox2d = np.concatenate([uv - RNG.uniform(5, 40, (n, 2)), uv + RNG.uniform(5, 40, (n, 2))], -1)
  return b, bbox2d, K, R, np.array([256.0, 192.0])


def test_pose_vector_round_trip():
  b, bbox2d, K, R, size = _camera_scene()
  pose = geometry.box_to_pose(b, bbox2d, K, R, size)
  np.testing.assert_allclose(pose[:, 2], np.linalg.norm(b[:, :3], axis=-1))
  np.testing.assert_allclose(geometry.pose_to_box(pose, bbox2d, K, R, size), b, atol=1e-9)


def test_pose_vector_known_answer():
  K = geometry.intrinsics(100.0, 50.0, 50.0)
  R = np.eye(3)
  box = np.array([0.0, 0.0, 2.0, 1, 1, 1, 0.3])
  # Centre (50, 60); the box centre projects to (50, 50).
  bbox2d = np.array([40.0, 50.0, 60.0, 70.0])
  pose = geometry.box_to_pose(box, bbox2d, K, R, np.array([100.0, 200.0]))
  np.testing.assert_allclose(pose, [0.0, -10 / 200, 2.0, 1, 1, 1, 0.3], atol=1e-12)


def test_pose_conversion_in_jax_matches_numpy_under_jit():
  b, bbox2d, K, R, size = _camera_scene()
  pose_np = geometry.box_to_pose(b, bbox2d, K, R, size)
  to_box = jax.jit(geometry.pose_to_box)
  args = [jnp.asarray(x, jnp.float32) for x in (pose_np, bbox2d, K, R, size)]
  out = to_box(*args)
  assert isinstance(out, jax.Array)
  np.testing.assert_allclose(np.asarray(out), b, rtol=1e-4, atol=1e-4)
  # Broadcast over a batch of scenes: K and R per scene, objects per scene.
  batched = jax.jit(geometry.box_to_pose)(
      jnp.stack([jnp.asarray(b, jnp.float32)] * 2), jnp.stack([args[1]] * 2),
      jnp.stack([args[2]] * 2)[:, None], jnp.stack([args[3]] * 2)[:, None], args[4])
  np.testing.assert_allclose(np.asarray(batched[1]), pose_np, rtol=1e-4, atol=1e-4)


def test_statistics_normalise_into_unit_range_and_round_trip(tmp_path):
  b, bbox2d, K, R, size = _camera_scene(200)
  poses = geometry.box_to_pose(b, bbox2d, K, R, size)
  stats = geometry.compute_statistics(poses)
  normalized = stats.normalize(poses)
  assert np.all(np.abs(normalized) <= 1 + 1e-12)
  assert stats.scale[6] == pytest.approx(np.pi) and stats.mean[6] == 0
  restored = geometry.Statistics.from_json(stats.to_json())
  np.testing.assert_allclose(restored.denormalize(normalized), poses, atol=1e-12)
  jax_out = restored.denormalize(jnp.asarray(normalized, jnp.float32))
  np.testing.assert_allclose(np.asarray(jax_out), poses, rtol=1e-5, atol=1e-5)


def test_quarter_turn_canonical_keeps_the_solid_and_picks_one_yaw():
  b = random_boxes(200)
  c = boxes.quarter_turn_canonical(b)
  assert np.all(np.abs(c[:, 6]) <= np.pi / 4 + 1e-9)
  # The same solid: the same set of corners (order aside).
  for original, canonical in zip(boxes.box_corners(b), boxes.box_corners(c)):
    distance = np.linalg.norm(original[:, None] - canonical[None], axis=-1)
    assert distance.min(1).max() < 1e-9
  # Known answer: a quarter turn swaps width and depth.
  turned = boxes.quarter_turn_canonical(np.array([0, 0, 2, 1.0, 0.5, 3.0, np.pi / 2 + 0.1]))
  np.testing.assert_allclose(turned, [0, 0, 2, 3.0, 0.5, 1.0, 0.1], atol=1e-12)
  # Four representations of one room all map to the same one.
  room = np.array([0.2, -0.1, 3.0, 4.0, 2.6, 5.0, 0.3])
  variants = [room + [0, 0, 0, 0, 0, 0, k * np.pi / 2] for k in range(-2, 2)]
  variants = [np.where(np.arange(7) == 3, v[5], np.where(np.arange(7) == 5, v[3], v))
              if k % 2 else v for k, v in zip(range(-2, 2), variants)]
  for v in variants:
    np.testing.assert_allclose(boxes.quarter_turn_canonical(v), room, atol=1e-12)
