"""Furnishing a room with structure: furniture against walls, chairs at tables, lamps on tops.

Works in the room frame: y down, the floor at y = 0 (so everything stands at y < 0), the room
spanning x ∈ [−W/2, W/2], z ∈ [−D/2, D/2]. Boxes use the 7-number layout of DESIGN.md;
an object's front is its canonical −z face, i.e. the direction (−sin θ, −cos θ) in (x, z).
Every object either stands on the floor or on the top face of the object it is placed on,
and no two object boxes overlap by more than COLLISION_MARGIN.
"""
import dataclasses

import numpy as np

from data_pipelines.synth_rooms.shape_bank import ShapeBank
from scenediff_jax.geometry import CLASSES, box_corners, wrap_angle

COLLISION_MARGIN = 0.005  # metres of allowed overlap (boxes may touch)
WALL_GAP = 0.02
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}

# Room types and how often they occur; chairs come out the most common class overall, as in
# SUN RGB-D, because dining, office and meeting rooms put several chairs at each table.
ROOM_TYPES = {'bedroom': 0.25, 'living_room': 0.2, 'dining_room': 0.13, 'office': 0.2,
              'bathroom': 0.1, 'meeting_room': 0.12}


@dataclasses.dataclass
class PlacedObject:
  class_index: int
  shape_id: int
  box: np.ndarray        # [7], room frame
  support: int = -1      # index of the object it stands on, −1 for the floor
  faces: int = -1        # index of the table or desk a chair was set to face, −1 for none


@dataclasses.dataclass
class Room:
  kind: str
  size: np.ndarray       # (W, H, D) metres
  objects: list

  @property
  def box(self) -> np.ndarray:
    w, h, d = self.size
    return np.array([0.0, -h / 2, 0.0, w, h, d, 0.0])


def footprint(box) -> np.ndarray:
  """The 4 floor-plan corners (x, z) [4, 2] of a box: its top face seen from above."""
  return box_corners(np.asarray(box, float))[:4][:, [0, 2]]


def boxes_collide(a, b, margin=COLLISION_MARGIN) -> bool:
  """Whether two gravity-aligned boxes overlap by more than `margin` (separating axes)."""
  if min(a[1] + a[4] / 2, b[1] + b[4] / 2) - max(a[1] - a[4] / 2, b[1] - b[4] / 2) <= margin:
    return False
  fa, fb = footprint(a), footprint(b)
  for poly in (fa, fb):
    for k in range(2):
      axis = poly[k + 1] - poly[k]
      axis = axis / np.linalg.norm(axis)
      pa, pb = fa @ axis, fb @ axis
      if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= margin:
        return False
  return True


def yaw_facing(direction) -> float:
  """The yaw whose front (−sin θ, −cos θ) points along the (x, z) `direction`."""
  return float(np.arctan2(-direction[0], -direction[1]))


def local_to_room(box, local_xz) -> np.ndarray:
  """A point given in a box's own (x, z) floor-plan frame → room (x, z)."""
  c, s = np.cos(box[6]), np.sin(box[6])
  x, z = local_xz
  return box[[0, 2]] + np.array([c * x + s * z, -s * x + c * z])


class Furnisher:
  """Places objects one group at a time, skipping any that would collide or leave the room."""

  def __init__(self, rng, bank: ShapeBank, split: str, room_size, max_objects: int):
    self.rng, self.bank, self.split = rng, bank, split
    self.size = np.asarray(room_size, float)
    self.max_objects = max_objects
    self.objects: list[PlacedObject] = []

  # Picking shapes and sizes.
  def pick(self, class_name, max_height=None, min_height=None):
    """A shape of the split and its size in this scene (nominal size ± 8%), with the height
    within the limits; (None, None) when no shape of the split can meet them."""
    jitter = 1 + self.rng.uniform(-0.08, 0.08, 3)
    for shape_id in self.rng.permutation(self.bank.ids(self.split, CLASS_INDEX[class_name])):
      shape = self.bank.shape(int(shape_id))
      size = shape.size * (jitter[[0, 1, 0]] if shape.round_footprint else jitter)
      if ((max_height is None or size[1] <= max_height)
          and (min_height is None or size[1] >= min_height)):
        return int(shape_id), size
    return None, None

  @property
  def full(self) -> bool:
    return len(self.objects) >= self.max_objects

  def add(self, class_name, shape_id, box, support=-1, faces=-1):
    """Adds the object when it fits: inside the room and clear of every other object."""
    if self.full:
      return None
    half_w, half_d = self.size[0] / 2, self.size[2] / 2
    corners = footprint(box)
    if (np.any(np.abs(corners[:, 0]) > half_w + 1e-9)
        or np.any(np.abs(corners[:, 1]) > half_d + 1e-9)):
      return None
    if box[1] - box[4] / 2 < -self.size[1]:
      return None
    for i, other in enumerate(self.objects):
      if i != support and boxes_collide(box, other.box):
        return None
    self.objects.append(PlacedObject(CLASS_INDEX[class_name], shape_id, np.asarray(box, float),
                                     support, faces))
    return len(self.objects) - 1

  # Placement rules.
  def on_floor(self, class_name, xz, yaw, size=None, shape_id=None, faces=-1, **pick):
    if size is None:
      shape_id, size = self.pick(class_name, **pick)
    if shape_id is None:
      return None
    box = np.array([xz[0], -size[1] / 2, xz[1], *size, wrap_angle(yaw)])
    return self.add(class_name, shape_id, box, faces=faces)

  def against_wall(self, class_name, wall=None, attempts=6, **pick):
    """On the floor, back to a wall, facing into the room."""
    shape_id, size = self.pick(class_name, **pick)
    for _ in range(attempts if shape_id is not None else 0):
      k = self.rng.integers(4) if wall is None else wall
      normal = [(0, -1), (0, 1), (-1, 0), (1, 0)][k]           # inward normal of the wall
      along = np.array([abs(normal[1]), abs(normal[0])], float)
      half_len = (self.size[0] if normal[0] == 0 else self.size[2]) / 2
      half_depth = (self.size[2] if normal[0] == 0 else self.size[0]) / 2
      room_left = half_len - size[0] / 2 - WALL_GAP
      if room_left < 0:
        continue
      t = self.rng.uniform(-room_left, room_left)
      xz = along * t - np.array(normal) * (half_depth - size[2] / 2 - WALL_GAP)
      i = self.on_floor(class_name, xz, yaw_facing(normal), size, shape_id)
      if i is not None:
        return i
    return None

  def in_free_space(self, class_name, attempts=8, **pick):
    shape_id, size = self.pick(class_name, **pick)
    for _ in range(attempts if shape_id is not None else 0):
      margin = np.maximum(self.size[[0, 2]] / 2 - max(size[0], size[2]) / 2 - 0.4, 0)
      xz = self.rng.uniform(-margin, margin)
      yaw = self.rng.choice([0.0, np.pi / 2]) + self.rng.normal(0, 0.05)
      i = self.on_floor(class_name, xz, yaw, size, shape_id)
      if i is not None:
        return i
    return None

  def beside(self, class_name, anchor, local_xz_of_size, facing_yaw_offset=0.0, **pick):
    """On the floor at a position given in the anchor's frame (a function of our size)."""
    shape_id, size = self.pick(class_name, **pick)
    if shape_id is None:
      return None
    box = self.objects[anchor].box
    xz = local_to_room(box, local_xz_of_size(size))
    return self.on_floor(class_name, xz, box[6] + facing_yaw_offset, size, shape_id)

  def facing(self, class_name, anchor, side, offset=0.0, gap=None, **pick):
    """A chair at one side of a table or desk, facing it. side ∈ {'-z', '+z', '-x', '+x'}."""
    shape_id, size = self.pick(class_name, **pick)
    if shape_id is None:
      return None
    box = self.objects[anchor].box
    gap = self.rng.uniform(0.03, 0.25) if gap is None else gap
    axis, sign = {'-z': (1, -1), '+z': (1, 1), '-x': (0, -1), '+x': (0, 1)}[side]
    local = np.zeros(2)
    local[axis] = sign * (box[3 if axis == 0 else 5] / 2 + gap + size[2] / 2)
    local[1 - axis] = offset
    xz = local_to_room(box, local)
    toward = box[[0, 2]] - local_to_room(box, local * np.eye(2)[axis])
    yaw = yaw_facing(toward) + self.rng.normal(0, 0.08)
    return self.on_floor(class_name, xz, yaw, size, shape_id, faces=anchor)

  def on_top(self, class_name, support, **pick):
    """Standing on the top face of `support`, inside its footprint."""
    shape_id, size = self.pick(class_name, **pick)
    if shape_id is None:
      return None
    base = self.objects[support].box
    shrink = min(1.0, 0.9 * base[3] / size[0], 0.9 * base[5] / size[2])
    size = size * np.array([shrink, 1.0 if shrink > 0.6 else shrink / 0.6, shrink])
    room_x, room_z = (base[3] - size[0]) / 2, (base[5] - size[2]) / 2
    xz = local_to_room(base, (self.rng.uniform(-room_x, room_x), self.rng.uniform(-room_z, room_z)))
    top = base[1] - base[4] / 2
    box = np.array([xz[0], top - size[1] / 2, xz[1], *size, base[6]])
    return self.add(class_name, shape_id, box, support)


# Room programs: each adds the groups of furniture typical of its room type.
def _bed_group(f: Furnisher):
  bed = f.against_wall('bed')
  if bed is None:
    return
  for side in f.rng.permutation([-1, 1])[:f.rng.choice([0, 1, 2, 2])]:
    bed_box = f.objects[bed].box
    stand = f.beside('nightstand', bed, lambda s, side=side, b=bed_box: (
        side * (b[3] / 2 + 0.04 + s[0] / 2), b[5] / 2 - s[2] / 2))
    if stand is not None and f.rng.random() < 0.6:
      f.on_top('lamp', stand, max_height=0.8)


def _desk_group(f: Furnisher):
  desk = f.against_wall('desk')
  if desk is None:
    return
  if f.rng.random() < 0.85:
    f.facing('chair', desk, '-z', offset=f.rng.normal(0, 0.1))
  if f.rng.random() < 0.4:
    f.on_top('lamp', desk, max_height=0.8)


def _table_group(f: Furnisher, n_chairs):
  table = f.in_free_space('table', min_height=0.6)
  if table is None:
    return
  box = f.objects[table].box
  sides = ('-z', '+z', '-x', '+x')  # the long sides (along the table's width) first
  per_side = [len(range(s, n_chairs, 4)) for s in range(4)]
  for k in range(n_chairs):
    side, slot = sides[k % 4], k // 4
    length = box[3] if side in ('-z', '+z') else box[5]
    offset = ((slot + 0.5) / per_side[k % 4] - 0.5) * length
    f.facing('chair', table, side, offset=offset)


def _sofa_group(f: Furnisher):
  sofa = f.against_wall('sofa')
  if sofa is None:
    return
  if f.rng.random() < 0.7:
    gap = f.rng.uniform(0.3, 0.5)
    f.beside('table', sofa, lambda s: (0.0, -f.objects[sofa].box[5] / 2 - gap - s[2] / 2),
             max_height=0.55)
  if f.rng.random() < 0.4:
    side = f.rng.choice([-1, 1])
    f.beside('lamp', sofa, lambda s: (side * (f.objects[sofa].box[3] / 2 + 0.1 + s[0] / 2),
                                      f.objects[sofa].box[5] / 2 - s[2] / 2 - 0.05),
             min_height=1.0)


def _storage(f: Furnisher, class_name, lamp_probability=0.0):
  i = f.against_wall(class_name, max_height=1.3 if lamp_probability else None)
  if i is not None and f.rng.random() < lamp_probability:
    f.on_top('lamp', i, max_height=0.8)


def _sink_counter(f: Furnisher):
  cabinet = f.against_wall('cabinet', max_height=1.0)
  if cabinet is not None and f.objects[cabinet].box[4] < 1.1:
    f.on_top('sink', cabinet)


def _maybe(f, p, group, *args):
  if f.rng.random() < p:
    group(f, *args)


def furnish(rng, bank: ShapeBank, split: str, max_objects: int) -> Room:
  """A random room of a random type, furnished with 1 to `max_objects` objects."""
  kind = rng.choice(list(ROOM_TYPES), p=np.array(list(ROOM_TYPES.values())))
  size = np.array([rng.uniform(3, 7), rng.uniform(2.4, 3.2), rng.uniform(3, 8)])
  f = Furnisher(rng, bank, split, size, max_objects)
  if kind == 'bedroom':
    _bed_group(f)
    _maybe(f, 0.6, _storage, 'dresser', 0.3)
    _maybe(f, 0.4, _storage, 'cabinet')
    _maybe(f, 0.3, _desk_group)
  elif kind == 'living_room':
    _sofa_group(f)
    _maybe(f, 0.3, _sofa_group)
    _maybe(f, 0.6, _storage, 'cabinet')
    _maybe(f, 0.3, _table_group, rng.integers(2, 5))
    for _ in range(rng.integers(0, 3)):
      f.in_free_space('chair')
  elif kind == 'dining_room':
    _table_group(f, rng.integers(2, 9))
    _maybe(f, 0.5, _storage, rng.choice(['cabinet', 'dresser']), 0.2)
  elif kind == 'office':
    for _ in range(rng.integers(1, 4)):
      _desk_group(f)
    for _ in range(rng.integers(0, 3)):
      _storage(f, 'cabinet')
    _maybe(f, 0.3, _table_group, rng.integers(2, 5))
  elif kind == 'bathroom':
    for _ in range(rng.integers(1, 3)):
      _sink_counter(f)
    _maybe(f, 0.5, _storage, 'cabinet')
  else:  # meeting_room
    _table_group(f, rng.integers(4, 11))
    _maybe(f, 0.5, _storage, 'cabinet')
    _maybe(f, 0.3, _desk_group)
  if not f.objects:  # Every scene has at least one object.
    f.against_wall(rng.choice(['cabinet', 'dresser', 'sofa']))
  return Room(kind, size, f.objects)
