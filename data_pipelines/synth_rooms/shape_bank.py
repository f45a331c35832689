"""The shape instances of SynthRooms: deterministic by id, disjoint between train and test.

Shape ids are global integers. For `n_train` and `n_test` shapes per class, class c owns
train ids [c·n_train, (c+1)·n_train) and test ids n_train·C + [c·n_test, (c+1)·n_test), so a
scene of one split only ever uses shapes of that split. Shape i is `furniture.make_shape`
with a generator seeded by (seed, i): any process rebuilds the same bank from the config.
"""
import functools

import numpy as np
import trimesh

from data_pipelines.synth_rooms import furniture, raytrace
from scenediff_jax.geometry.classes import CLASSES

SPLITS = ('train', 'test')


class ShapeBank:

  def __init__(self, seed: int, n_train: int, n_test: int):
    if n_train < 1 or n_test < 1:
      raise ValueError(f'Need at least one shape per class and split, got {n_train}, {n_test}.')
    self.seed, self.n_train, self.n_test = seed, n_train, n_test

  def ids(self, split: str, class_index: int) -> np.ndarray:
    if split not in SPLITS:
      raise ValueError(f'Unknown split {split!r}; expected one of {SPLITS}.')
    if split == 'train':
      return class_index * self.n_train + np.arange(self.n_train)
    return len(CLASSES) * self.n_train + class_index * self.n_test + np.arange(self.n_test)

  def all_ids(self, split: str) -> np.ndarray:
    return np.concatenate([self.ids(split, c) for c in range(len(CLASSES))])

  def class_of(self, shape_id: int) -> int:
    n_train_total = len(CLASSES) * self.n_train
    if shape_id < n_train_total:
      return shape_id // self.n_train
    return (shape_id - n_train_total) // self.n_test

  def shape(self, shape_id: int) -> furniture.Shape:
    return _make_shape(self.seed, CLASSES[self.class_of(int(shape_id))], int(shape_id))


@functools.lru_cache(maxsize=8192)  # shared by every bank of a process
def _make_shape(seed: int, class_name: str, shape_id: int) -> furniture.Shape:
  return furniture.make_shape(class_name, np.random.default_rng([seed, 7919, shape_id]))


def _cylinder_mesh(part, segments=32) -> trimesh.Trimesh:
  angle = np.linspace(0, 2 * np.pi, segments, endpoint=False)
  ring = np.stack([np.cos(angle), np.zeros_like(angle), np.sin(angle)], -1)
  top = ring * [part.taper, 0, part.taper] + [0, -1, 0]
  bottom = ring + [0, 1, 0]
  vertices = np.concatenate([top, bottom, [[0, -1, 0], [0, 1, 0]]])
  i = np.arange(segments)
  j = (i + 1) % segments
  n = segments
  faces = np.concatenate([
      np.stack([i, j, n + j], -1), np.stack([i, n + j, n + i], -1),  # side
      np.stack([np.full(n, 2 * n), j, i], -1),                      # top cap
      np.stack([np.full(n, 2 * n + 1), n + i, n + j], -1),          # bottom cap
  ])
  mesh = trimesh.Trimesh(vertices * part.half + part.center, faces, process=False)
  mesh.fix_normals()
  return mesh


def part_mesh(part) -> trimesh.Trimesh:
  """A closed triangle mesh of one part (curved parts tessellated)."""
  if part.kind == 'box':
    return trimesh.creation.box(extents=2 * np.asarray(part.half),
                                transform=trimesh.transformations.translation_matrix(part.center))
  if part.kind == 'ellipsoid':
    mesh = trimesh.creation.icosphere(subdivisions=3)
    mesh.vertices = mesh.vertices * part.half + part.center
    return mesh
  return _cylinder_mesh(part)


def outer_mesh(shape) -> trimesh.Trimesh:
  """The shape's outer surface as one watertight mesh: the boolean union of its parts
  (manifold3d). The ground truth that shapes are scored against: the parts' meshes together
  also hold the faces buried inside other parts, which no reconstruction has, and points
  sampled on them would count as missed (InstPIFu, too, scores against watertight meshes)."""
  return trimesh.boolean.union([part_mesh(p) for p in shape.parts], engine='manifold')


def _onto_exact_surface(part, points, normals):
  """Moves samples of a tessellated curved part onto its exact surface, with exact normals
  (facets lie slightly inside the curved surface the renderer and the inside test use)."""
  if part.kind == 'box':
    return points, normals
  q = (points - part.center) / part.half
  if part.kind == 'ellipsoid':
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    n = q / part.half
  else:
    side = np.abs(normals[:, 1]) < 0.999  # caps are flat already
    k = (1 + part.taper) / 2 + (1 - part.taper) / 2 * q[:, 1]
    radial = np.linalg.norm(q[:, [0, 2]], axis=-1)
    scale = np.where(side, k / np.maximum(radial, 1e-12), 1.0)
    q[:, 0] *= scale
    q[:, 2] *= scale
    b = (1 - part.taper) / 2 / part.half[1]
    n = np.stack([q[:, 0] / part.half[0], -k * b * np.ones_like(k), q[:, 2] / part.half[2]], -1)
    n = np.where(side[:, None], n, normals)
  n = n / np.linalg.norm(n, axis=-1, keepdims=True)
  return q * part.half + part.center, n


def surface_samples(shape, count: int, rng: np.random.Generator):
  """`count` points [count, 3] and unit normals on the outer surface, canonical frame."""
  meshes = [part_mesh(p) for p in shape.parts]
  areas = np.array([m.area for m in meshes])
  points, normals = [], []
  need = count
  for _ in range(100):
    # Oversample, then keep the points on the union's outer surface: those from which a
    # small step along the normal leaves every part (this drops faces buried in, or
    # pressed against, another part).
    n = int(need * 1.5) + 64
    per_part = rng.multinomial(n, areas / areas.sum())
    for part, mesh, k in zip(shape.parts, meshes, per_part):
      if k == 0:
        continue
      p, face = trimesh.sample.sample_surface(mesh, k, seed=rng)
      p, n_out = _onto_exact_surface(part, p, mesh.face_normals[face])
      keep = ~raytrace.inside(shape.parts, p + 1e-4 * n_out)
      points.append(p[keep])
      normals.append(n_out[keep])
    need = count - sum(len(p) for p in points)
    if need <= 0:
      break
  else:
    raise RuntimeError(f'{shape.style}: too little outer surface to sample {count} points.')
  points, normals = np.concatenate(points), np.concatenate(normals)
  order = rng.permutation(len(points))[:count]
  return points[order].astype(np.float32), normals[order].astype(np.float32)


def occupancy_samples(shape, count: int, rng: np.random.Generator, near_sigma=0.02):
  """Query points [count, 3] and inside labels [count]: half uniform in [−0.55, 0.55]³,
  half near the surface (surface samples + N(0, near_sigma²)), canonical frame."""
  n_uniform = count // 2
  uniform = rng.uniform(-0.55, 0.55, (n_uniform, 3))
  surface, _ = surface_samples(shape, count - n_uniform, rng)
  near = surface + rng.normal(0, near_sigma, surface.shape)
  points = np.concatenate([uniform, near])
  return points.astype(np.float32), raytrace.inside(shape.parts, points)
