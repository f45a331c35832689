"""SynthRooms scenes: depth, instances, 2D and 3D boxes agree; the arrangement is physical;
generation is deterministic."""
import itertools

import numpy as np

from data_pipelines.synth_rooms import raytrace, render, room_layout, scene, shape_bank
from data_pipelines.synth_rooms.scene import generate_scene
from scenediff_jax import geometry


def test_record_fields_follow_the_design(scenes, scene_config):
  h, w = scene_config.height, scene_config.width
  for r in scenes:
    assert r['image'].shape == (h, w, 3) and r['image'].dtype == np.uint8
    assert r['depth'].shape == (h, w) and r['depth'].dtype == np.float32
    assert r['instances'].dtype == np.int32 and r['instances'].min() >= -1
    n = len(r['objects']['class'])
    assert 1 <= n <= scene_config.max_objects
    assert r['instances'].max() == n - 1
    assert r['objects']['bbox2d'].shape == (n, 4) and r['objects']['box3d'].shape == (n, 7)
    assert np.all(r['depth'] > 0)  # a closed room: every pixel sees a surface


def test_depth_inside_each_mask_back_projects_into_its_box(scenes):
  for r in scenes:
    K, R = r['K'].astype(np.float64), r['world_to_cam'].astype(np.float64)
    for k, box in enumerate(r['objects']['box3d'].astype(np.float64)):
      points = geometry.depth_to_points(r['depth'], K, R, mask=r['instances'] == k)
      assert len(points) >= 1
      inside = geometry.points_in_box(points, box, inflate=0.05)
      assert inside.mean() >= 0.95, (k, inside.mean())


def test_room_pixels_lie_on_the_room_box_surface(scenes):
  for r in scenes:
    K, R = r['K'].astype(np.float64), r['world_to_cam'].astype(np.float64)
    points = geometry.depth_to_points(r['depth'], K, R, mask=r['instances'] < 0)
    local = geometry.world_to_canonical(points[None], r['layout'].astype(np.float64)[None])[0]
    # Background pixels that are not hidden object slivers sit on a wall, floor or ceiling.
    on_surface = np.abs(np.abs(local).max(-1) - 0.5) < 1e-3
    assert on_surface.mean() > 0.97


def test_bbox2d_inside_image_and_inside_projected_box(scenes, scene_config):
  for r in scenes:
    K, R = r['K'].astype(np.float64), r['world_to_cam'].astype(np.float64)
    for k, (bbox, box) in enumerate(zip(r['objects']['bbox2d'], r['objects']['box3d'])):
      x1, y1, x2, y2 = bbox
      assert 0 <= x1 <= x2 <= scene_config.width - 1 and 0 <= y1 <= y2 <= scene_config.height - 1
      rows, cols = np.nonzero(r['instances'] == k)
      np.testing.assert_array_equal(bbox, [cols.min(), rows.min(), cols.max(), rows.max()])
      uv, z = geometry.project(geometry.box_corners(box.astype(np.float64)), K, R)
      if np.all(z > 0):
        lo, hi = uv.min(0), uv.max(0)
        assert lo[0] - 1e-3 <= x1 and x2 <= hi[0] + 1e-3
        assert lo[1] - 1e-3 <= y1 and y2 <= hi[1] + 1e-3


def test_pose_vectors_round_trip_on_records(scenes, scene_config):
  size = np.array([scene_config.width, scene_config.height], np.float64)
  for r in scenes:
    K, R = r['K'].astype(np.float64), r['world_to_cam'].astype(np.float64)
    boxes = r['objects']['box3d'].astype(np.float64)
    bbox2d = r['objects']['bbox2d'].astype(np.float64)
    pose = geometry.box_to_pose(boxes, bbox2d, K, R, size)
    np.testing.assert_allclose(geometry.pose_to_box(pose, bbox2d, K, R, size), boxes, atol=1e-5)


def test_camera_is_a_rotation_within_the_documented_ranges(scenes):
  for r in scenes:
    R = r['world_to_cam'].astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert np.linalg.det(R) > 0.999
    pitch, roll = geometry.pitch_roll(R)
    assert 0 <= pitch <= np.radians(30) + 1e-6 and abs(roll) <= np.radians(5) + 1e-6
    floor_below_camera = r['layout'][1] + r['layout'][4] / 2
    assert 1.0 - 1e-5 <= floor_below_camera <= 1.7 + 1e-5
    assert abs(r['K'][0, 0] - 529.5 * 256 / 640) < 1e-3


def _rooms(n=60, split='train'):
  bank = shape_bank.ShapeBank(0, 4, 2)
  return [room_layout.furnish(np.random.default_rng([5, i]), bank, split, 16) for i in range(n)]


def _overlap_fraction(a, b, n=12):
  """Share of a's volume inside b, estimated on a grid of a (independent of the SAT test)."""
  g = (np.arange(n) + 0.5) / n - 0.5
  grid = np.stack(np.meshgrid(g, g, g, indexing='ij'), -1).reshape(-1, 3)
  points = geometry.canonical_to_world(grid[None], a[None])[0]
  return geometry.points_in_box(points, b).mean()


def test_no_two_objects_interpenetrate():
  for room in _rooms():
    for a, b in itertools.combinations([o.box for o in room.objects], 2):
      assert _overlap_fraction(a, b) < 0.01 and _overlap_fraction(b, a) < 0.01


def test_every_object_rests_on_the_floor_or_on_another_object_inside_the_room():
  for room in _rooms():
    boxes = [o.box for o in room.objects]
    for o in room.objects:
      bottom = o.box[1] + o.box[4] / 2
      if o.support < 0:
        assert abs(bottom) < 1e-9  # the floor is y = 0
      else:
        base = boxes[o.support]
        assert abs(bottom - (base[1] - base[4] / 2)) < 1e-9
        center = geometry.world_to_canonical(o.box[None, :3], base)[0]
        assert np.all(np.abs(center[[0, 2]]) <= 0.5)
      corners = geometry.box_corners(o.box)
      assert np.all(np.abs(corners[:, 0]) <= room.size[0] / 2 + 1e-6)
      assert np.all(np.abs(corners[:, 2]) <= room.size[2] / 2 + 1e-6)


def test_arrangement_has_structure():
  rooms = _rooms(200)
  classes = np.concatenate([[o.class_index for o in r.objects] for r in rooms])
  counts = np.bincount(classes, minlength=10)
  assert np.all(counts > 0), counts
  assert counts.argmax() == room_layout.CLASS_INDEX['chair']
  sizes = [len(r.objects) for r in rooms]
  assert min(sizes) >= 1 and max(sizes) <= 16 and max(sizes) >= 8
  # Objects against a wall face into the room: their front points away from the nearest wall.
  facing_in = []
  for room in rooms:
    for o in room.objects:
      if o.class_index in (room_layout.CLASS_INDEX['bed'], room_layout.CLASS_INDEX['dresser']):
        front = np.array([-np.sin(o.box[6]), -np.cos(o.box[6])])
        facing_in.append(front @ -o.box[[0, 2]] > 0)  # toward the room centre
  assert np.mean(facing_in) > 0.95
  # Lamps stand on something or on the floor; sinks always stand on a cabinet.
  for room in rooms:
    for o in room.objects:
      if o.class_index == room_layout.CLASS_INDEX['sink']:
        assert room.objects[o.support].class_index == room_layout.CLASS_INDEX['cabinet']


def test_chairs_at_tables_and_desks_face_them():
  faced = 0
  for room in _rooms(100):
    for o in room.objects:
      if o.faces < 0:
        continue
      target = room.objects[o.faces]
      assert o.class_index == room_layout.CLASS_INDEX['chair']
      assert target.class_index in (room_layout.CLASS_INDEX['table'],
                                    room_layout.CLASS_INDEX['desk'])
      front = np.array([-np.sin(o.box[6]), -np.cos(o.box[6])])
      to_target = target.box[[0, 2]] - o.box[[0, 2]]
      assert front @ to_target / np.linalg.norm(to_target) > 0.5
      faced += 1
  assert faced > 50


def test_same_seed_same_scene_different_seed_different_scene(scene_config, scenes):
  again = generate_scene(scene_config, 'train', 3)
  for key in ('image', 'depth', 'instances', 'K', 'world_to_cam', 'layout'):
    np.testing.assert_array_equal(again[key], scenes[3][key])
  for key, value in again['objects'].items():
    np.testing.assert_array_equal(value, scenes[3]['objects'][key])
  other = generate_scene(type(scene_config)(**{**scene_config.__dict__, 'seed': 1}), 'train', 3)
  assert not np.array_equal(other['image'], again['image'])
  assert not np.array_equal(scenes[0]['image'], scenes[1]['image'])


def test_train_and_test_scenes_use_disjoint_shapes(scenes, scene_config):
  bank = scene_config.bank()
  train_ids, test_ids = set(bank.all_ids('train')), set(bank.all_ids('test'))
  assert not train_ids & test_ids
  for r in scenes[:16]:
    assert set(r['objects']['shape_id'].tolist()) <= train_ids
  for r in scenes[16:]:
    assert set(r['objects']['shape_id'].tolist()) <= test_ids
  for r in scenes:
    for shape_id, cls in zip(r['objects']['shape_id'], r['objects']['class']):
      assert bank.class_of(int(shape_id)) == cls


def test_ray_hits_agree_with_the_inside_test():
  bank = shape_bank.ShapeBank(0, 4, 2)
  rng = np.random.default_rng(1)
  for shape_id in bank.all_ids('train')[::3]:
    parts = bank.shape(int(shape_id)).parts
    origins = rng.normal(size=(400, 3))
    origins = origins / np.linalg.norm(origins, axis=-1, keepdims=True) * 2.0
    directions = rng.uniform(-0.4, 0.4, (400, 3)) - origins
    t, normal, part = raytrace.cast(parts, origins, directions)
    hit = np.isfinite(t)
    assert hit.mean() > 0.2
    before = origins[hit] + (t[hit] - 1e-4)[:, None] * directions[hit]
    after = origins[hit] + (t[hit] + 1e-4)[:, None] * directions[hit]
    assert not raytrace.inside(parts, before).any()
    assert raytrace.inside(parts, after).mean() > 0.99
    # The normal at the hit faces back toward the ray's origin.
    assert np.all((normal[hit] * directions[hit]).sum(-1) < 0)
    # Missed rays never pass through the solid.
    samples = origins[~hit, None] + np.linspace(0, 1.5, 60)[None, :, None] * directions[~hit, None]
    assert not raytrace.inside(parts, samples.reshape(-1, 3)).any()


def _posed_rooms(n, seed=9):
  """Furnished rooms with the camera pose the generator would choose, in the world frame."""
  bank = shape_bank.ShapeBank(0, 4, 2)
  for i in range(n):
    rng = np.random.default_rng([seed, i])
    room = room_layout.furnish(rng, bank, 'train', 16)
    pose = scene.camera_pose(rng, room)
    if pose is not None:
      position, heading, pitch, roll, target = pose
      boxes = [scene.room_to_world(o.box, position, heading) for o in room.objects]
      yield (rng, bank, room, boxes, scene.room_to_world(room.box, position, heading),
             geometry.world_to_cam(pitch, roll), target)


def test_camera_is_aimed_at_its_target_object():
  K = scene.camera_intrinsics(192, 256)
  in_view = []
  for _, _, _, boxes, _, R, target in _posed_rooms(60):
    uv, z = geometry.project(boxes[target][:3], K, R)
    in_view.append(z > 0 and 0 <= uv[0] <= 255 and 0 <= uv[1] <= 191)
  assert len(in_view) > 40 and np.mean(in_view) > 0.85


def test_culling_renders_exactly_what_casting_every_ray_renders():
  K = scene.camera_intrinsics(96, 128)
  for rng, bank, room, boxes, layout, R, _ in itertools.islice(_posed_rooms(10, seed=4), 3):
    objects = [(box, bank.shape(o.shape_id).parts, render.random_material(rng, o.class_index, 30))
               for o, box in zip(room.objects, boxes)]
    material = render.random_room_material(rng)
    fast = render.render(layout, material, objects, K, R, 96, 128, np.random.default_rng(0))
    slow = render.render(layout, material, objects, K, R, 96, 128, np.random.default_rng(0),
                         cull=False)
    for a, b in zip(fast, slow):
      np.testing.assert_array_equal(a, b)
    assert (fast[2] >= 0).any()
