"""One SynthRooms scene: furnish a room, place a camera aimed at the furniture, render, and
express everything in the world frame of DESIGN.md as a record."""
import dataclasses

import numpy as np

from data_pipelines.synth_rooms import render, room_layout
from data_pipelines.synth_rooms.shape_bank import ShapeBank
from scenediff_jax import geometry

# SUN RGB-D's Kinect: f ≈ 529 px at 640 × 480.
KINECT_FOCAL, KINECT_WIDTH = 529.5, 640
SPLIT_SALT = {'train': 0, 'test': 1}


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  seed: int = 0
  height: int = 192
  width: int = 256
  max_objects: int = 16
  min_visible_pixels: int = 8   # objects showing fewer pixels are dropped from the record
  shapes_per_class_train: int = 60
  shapes_per_class_test: int = 15

  def bank(self) -> ShapeBank:
    return ShapeBank(self.seed, self.shapes_per_class_train, self.shapes_per_class_test)


def camera_intrinsics(height, width):
  focal = KINECT_FOCAL * width / KINECT_WIDTH
  return geometry.intrinsics(focal, (width - 1) / 2, (height - 1) / 2)


def camera_pose(rng, room, attempts=50):
  """Camera position (room frame), heading ψ, pitch, roll and the index of the object it
  is aimed at; None when no good position was found."""
  w, _, d = room.size
  footprints = [(room_layout.footprint(o.box), o.box) for o in room.objects]
  for _ in range(attempts):
    xz = rng.uniform([-w / 2 + 0.3, -d / 2 + 0.3], [w / 2 - 0.3, d / 2 - 0.3])
    if any(_inside_polygon_inflated(xz, fp, 0.25) for fp, _ in footprints):
      continue
    target_index = int(rng.integers(len(room.objects)))
    target = room.objects[target_index].box
    to_target = target[[0, 2]] - xz
    horizontal = np.linalg.norm(to_target)
    if horizontal < 1.0:
      continue
    height = rng.uniform(1.0, 1.7)
    heading = np.arctan2(to_target[0], to_target[1]) + rng.normal(0, np.radians(10))
    down = np.arctan2(target[1] + height, horizontal)   # target y is negative (up)
    pitch = np.clip(down + rng.normal(0, np.radians(5)), 0, np.radians(30))
    roll = rng.uniform(-np.radians(5), np.radians(5))
    return np.array([xz[0], -height, xz[1]]), heading, pitch, roll, target_index
  return None


def _inside_polygon_inflated(point, corners, margin):
  center = corners.mean(0)
  u, v = corners[1] - corners[0], corners[3] - corners[0]
  q = point - center
  return (abs(q @ u) / np.linalg.norm(u) <= np.linalg.norm(u) / 2 + margin and
          abs(q @ v) / np.linalg.norm(v) <= np.linalg.norm(v) / 2 + margin)


def _visible_bbox2d(instances, k):
  """Visible extent (x1, y1, x2, y2) through the centres of the object's extreme pixels."""
  rows, cols = np.nonzero(instances == k)
  return np.array([cols.min(), rows.min(), cols.max(), rows.max()], np.float32)


def generate_scene(config: SceneConfig, split: str, index: int, bank: ShapeBank = None) -> dict:
  """The record of scene `index` of `split`: a pure function of (config, split, index)."""
  bank = bank or config.bank()
  for attempt in range(100):
    rng = np.random.default_rng([config.seed, SPLIT_SALT[split], index, attempt])
    room = room_layout.furnish(rng, bank, split, config.max_objects)
    pose = camera_pose(rng, room)
    if pose is None:
      continue
    position, heading, pitch, roll, _ = pose
    record = _render_record(rng, config, bank, room, position, heading, pitch, roll)
    if record is not None:
      return {'scene_id': np.int32(index), **record}
  raise RuntimeError(f'Could not generate a visible scene for {split}[{index}].')


def room_to_world(box, position, heading):
  """A room-frame box in the world frame: the camera moved to the origin, its heading undone."""
  shifted = np.concatenate([box[:3] - position, box[3:]])
  return geometry.transform_boxes(shifted, -heading, np.zeros(3))


def _render_record(rng, config, bank, room, position, heading, pitch, roll):
  to_world = lambda box: room_to_world(box, position, heading)

  K = camera_intrinsics(config.height, config.width)
  R_wc = geometry.world_to_cam(pitch, roll)
  boxes = [to_world(o.box) for o in room.objects]
  objects = []
  for o, box in zip(room.objects, boxes):
    parts = bank.shape(o.shape_id).parts
    objects.append((box, parts, render.random_material(rng, o.class_index, len(parts))))
  layout = to_world(room.box)
  image, depth, instances = render.render(layout, render.random_room_material(rng), objects, K,
                                          R_wc, config.height, config.width, rng)
  pixels = np.bincount(instances.reshape(-1) + 1, minlength=len(objects) + 1)[1:]
  keep = np.nonzero(pixels >= config.min_visible_pixels)[0]
  if len(keep) == 0:
    return None
  remap = np.full(len(objects) + 1, -1, np.int32)
  remap[keep + 1] = np.arange(len(keep), dtype=np.int32)
  instances = remap[instances + 1]
  return {
      'image': image,
      'depth': depth,
      'instances': instances,
      'K': K.astype(np.float32),
      'world_to_cam': R_wc.astype(np.float32),
      'layout': layout.astype(np.float32),
      'objects': {
          'class': np.array([room.objects[k].class_index for k in keep], np.int32),
          'bbox2d': np.stack([_visible_bbox2d(instances, j) for j in range(len(keep))]),
          'box3d': np.stack([boxes[k] for k in keep]).astype(np.float32),
          'shape_id': np.array([room.objects[k].shape_id for k in keep], np.int32),
          'visible_pixels': pixels[keep].astype(np.int32),
      },
  }
