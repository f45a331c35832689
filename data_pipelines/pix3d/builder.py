"""TFDS builders `pix3d` (one scene record per photo: image, mask, camera, the object's box
and shape id) and `pix3d_shapes` (each model in its canonical frame: surface points, normals
and occupancy samples for the shape autoencoder), converted from a manual directory.

Photos of categories without a class of ours (misc, tool) are skipped, and so are photos
whose mask does not match the image size (two in the release). Pix3D has no depth and no
room: `depth` is 0 everywhere (no L_align) and `layout` is all zeros, which marks "no layout
ground truth" (the layout loss and metric skip it).

Splits: `<manual_dir>/splits/{train,test}.json` when present (lists of image paths such as
"img/bed/0001.png", of [image path, ...] rows as in SSR/InstPIFu-derived lists, or of
Total3D-style "<index>.pkl" paths); otherwise a split by model with a fixed seed, so train
and test share no model (about 1 model in 5 is held out).

Non-watertight models (most of Pix3D): inside/outside comes from a 128³ voxelisation of the
canonical surface with its enclosed cavities filled (trimesh + scipy), so gaps narrower than
a voxel are closed; a model with a larger hole counts only its surface shell as inside.
"""
import dataclasses
import functools
import json
import os

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
import trimesh

from data_pipelines import features, sharded
from data_pipelines.pix3d import convert
from data_pipelines.resize import resize_view

VERSION = tfds.core.Version('1.1.0')
RELEASE_NOTES = {'1.1.0': "pix3d_shapes' `size` is the model's own extent (1.0.0 stored ones)."}
SHARD_SIZE = 500
SPLITS = ('train', 'test')
SPLIT_SEED = 0
TEST_SHARE = 0.2
VOXELS = 128


@dataclasses.dataclass(kw_only=True)
class Pix3dConfig(tfds.core.BuilderConfig):
  height: int = 256
  width: int = 256
  surface_points: int = 4096
  occupancy_points: int = 8192


MANUAL_DOWNLOAD_INSTRUCTIONS = """
Pix3D is read from its public release (pix3d.csail.mit.edu: pix3d.zip); code never downloads
it. Unzip it and point config.data.manual_dir (or shape_manual_dir) at the folder holding:
  <manual_dir>/pix3d.json
  <manual_dir>/img/<category>/...      photos
  <manual_dir>/mask/<category>/...     masks
  <manual_dir>/model/<category>/...    .obj models
Optionally <manual_dir>/splits/train.json and test.json (e.g. InstPIFu's non-overlapping
split as image paths); without them the split is by model with a fixed seed.
e.g. --config.data.shape_manual_dir=~/data/pix3d
"""


def missing_files(manual_dir: str) -> list:
  return [w for w in ('pix3d.json', 'img', 'mask', 'model')
          if not os.path.exists(os.path.join(manual_dir, w))]


def read_entries(manual_dir):
  """pix3d.json's entries of categories we keep, each with its `index` in the file."""
  with open(os.path.join(manual_dir, 'pix3d.json')) as f:
    entries = json.load(f)
  return [dict(e, index=i) for i, e in enumerate(entries)
          if convert.class_index(e['category']) >= 0]


def model_ids(entries):
  """Model path → shape_id: its rank among the kept models' paths."""
  return {m: i for i, m in enumerate(sorted({e['model'] for e in entries}))}


def _split_key(row):
  """An image path or a pix3d.json index from one row of a split file."""
  if isinstance(row, (list, tuple)):
    row = row[0]
  if isinstance(row, int):
    return row
  name = os.path.basename(row)
  if name.endswith('.pkl'):  # Total3D-style "<index>.pkl" / "<index>_flipped.pkl"
    return int(name.split('.')[0].split('_')[0])
  return os.path.normpath(row.lstrip('./')) if row.startswith('./') else os.path.normpath(row)


def split_entries(manual_dir, split):
  """The kept entries of a split: the user's split files, else a seeded split by model."""
  entries = read_entries(manual_dir)
  split_file = os.path.join(manual_dir, 'splits', f'{split}.json')
  if os.path.exists(split_file):
    with open(split_file) as f:
      wanted = {_split_key(row) for row in json.load(f)}
    return [e for e in entries
            if e['index'] in wanted or os.path.normpath(e['img']) in wanted]
  models = sorted(model_ids(entries))
  order = np.random.default_rng(SPLIT_SEED).permutation(len(models))
  test_models = {models[i] for i in order[:max(1, round(TEST_SHARE * len(models)))]}
  return [e for e in entries if (e['model'] in test_models) == (split == 'test')]


def _read_rgb(path):
  return np.asarray(Image.open(path).convert('RGB'), np.uint8)


def _read_mask(path):
  mask = np.asarray(Image.open(path))
  return (mask[..., 0] if mask.ndim == 3 else mask) > 0


@functools.lru_cache(maxsize=64)  # photos share models: read each .obj once per process
def load_model(manual_dir, model_path):
  """(vertices, faces) of a model; read-only (cached)."""
  mesh = trimesh.load(os.path.join(manual_dir, model_path), force='mesh', process=False)
  return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def scene_example(entry, manual_dir, size, shape_ids):
  """The scene record of one photo, or None when its mask does not fit the image."""
  image = _read_rgb(os.path.join(manual_dir, entry['img']))
  mask = _read_mask(os.path.join(manual_dir, entry['mask']))
  if mask.shape != image.shape[:2]:
    logging.warning('%s: mask %s does not match the image %s; skipped.', entry['img'],
                    mask.shape, image.shape[:2])
    return None
  height, width = image.shape[:2]
  vertices, _ = load_model(manual_dir, entry['model'])
  R_wc = convert.world_to_cam(entry['rot_mat'])
  box = convert.object_box(vertices, entry['rot_mat'], entry['trans_mat'], R_wc)
  x1, y1, x2, y2 = entry['bbox']  # x2, y2 exclusive
  view = resize_view(image, convert.intrinsics(entry['focal_length'], width, height), size,
                     instances=np.where(mask, 0, -1).astype(np.int32),
                     bbox2d=np.array([[x1, y1, x2 - 1, y2 - 1]], np.float64))
  return {
      'image': view['image'],
      'depth': np.zeros(size, np.float32),
      'instances': view['instances'],
      'scene_id': np.int32(entry['index']),
      'K': view['K'].astype(np.float32),
      'world_to_cam': R_wc.astype(np.float32),
      'layout': np.zeros(7, np.float32),
      'objects': {
          'class': np.array([convert.class_index(entry['category'])], np.int32),
          'bbox2d': view['bbox2d'].astype(np.float32),
          'box3d': box[None].astype(np.float32),
          'shape_id': np.array([shape_ids[entry['model']]], np.int32),
          'visible_pixels': np.array([(view['instances'] == 0).sum()], np.int32),
      },
  }


def canonical_mesh(manual_dir, model_path) -> trimesh.Trimesh:
  vertices, faces = load_model(manual_dir, model_path)
  return trimesh.Trimesh(convert.canonical_vertices(vertices), faces, process=False)


def inside(mesh: trimesh.Trimesh, points):
  """Occupancy of canonical points: the filled 128³ voxelisation (see the module docstring)."""
  grid = mesh.voxelized(pitch=1.0 / VOXELS).fill()
  return grid.is_filled(points)


def shape_example(model_and_id, manual_dir, category, config):
  model_path, shape_id = model_and_id
  vertices, faces = load_model(manual_dir, model_path)
  mesh = trimesh.Trimesh(convert.canonical_vertices(vertices), faces, process=False)
  rng = np.random.default_rng([SPLIT_SEED, shape_id])
  points, faces = trimesh.sample.sample_surface(mesh, config.surface_points,
                                                seed=int(rng.integers(2**31)))
  normals = mesh.face_normals[faces]
  n_uniform = config.occupancy_points // 2
  near, _ = trimesh.sample.sample_surface(mesh, config.occupancy_points - n_uniform,
                                          seed=int(rng.integers(2**31)))
  queries = np.concatenate([rng.uniform(-0.55, 0.55, (n_uniform, 3)),
                            near + rng.normal(0, 0.02, near.shape)])
  return {
      'shape_id': np.int32(shape_id),
      'class': np.int32(convert.class_index(category[model_path])),
      # The model's proportions (the canonical mesh's would be ones): shape metrics score
      # in them (evaluation/shape_metrics.py, 'gt_box').
      'size': convert.model_box(vertices)[1].astype(np.float32),
      'surface': {'points': points.astype(np.float32), 'normals': normals.astype(np.float32)},
      'occupancy': {'points': queries.astype(np.float32), 'inside': inside(mesh, queries)},
  }


def canonical_mesh_loader(manual_dir):
  """shape_id → canonical ground-truth mesh (the evaluators' `true_mesh`)."""
  paths = sorted(model_ids(read_entries(manual_dir)))
  return lambda shape_id: canonical_mesh(manual_dir, paths[shape_id])


class _Pix3dBuilder(tfds.core.ShardBasedBuilder):
  """What both Pix3D builders share (abstract: TFDS registers only the two below)."""

  VERSION = VERSION
  RELEASE_NOTES = RELEASE_NOTES
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  missing_files = staticmethod(missing_files)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 homepage='http://pix3d.csail.mit.edu/',
                                 features=self._features(self.builder_config))


class Pix3d(_Pix3dBuilder):
  """Pix3D photos as one-object scenes: image, mask, camera, box and shape id."""

  BUILDER_CONFIGS = [Pix3dConfig(name='default', description='Photos resized to 256x256.')]

  def _features(self, c):
    return features.scene_features(c.height, c.width)

  def _shard_iterators_per_split(self, dl_manager):
    manual_dir, c = dl_manager.manual_dir, self.builder_config
    shape_ids = model_ids(read_entries(manual_dir))
    make = functools.partial(scene_example, manual_dir=manual_dir, size=(c.height, c.width),
                             shape_ids=shape_ids)
    return {split: sharded.shard_generators(make, split_entries(manual_dir, split),
                                            f'pix3d {split}', SHARD_SIZE,
                                            preload=('data_pipelines.pix3d.builder',))
            for split in SPLITS}


class Pix3dShapes(_Pix3dBuilder):
  """Pix3D's models in the canonical frame: surface points, normals, occupancy samples."""

  BUILDER_CONFIGS = [Pix3dConfig(name='default',
                                 description='4096 surface / 8192 occupancy samples.')]

  def _features(self, c):
    return features.shape_features(c.surface_points, c.occupancy_points)

  def _shard_iterators_per_split(self, dl_manager):
    manual_dir = dl_manager.manual_dir
    entries = read_entries(manual_dir)
    shape_ids = model_ids(entries)
    category = {e['model']: e['category'] for e in entries}
    train_models = {e['model'] for e in split_entries(manual_dir, 'train')}
    test_models = {e['model'] for e in split_entries(manual_dir, 'test')} - train_models
    make = functools.partial(shape_example, manual_dir=manual_dir, category=category,
                             config=self.builder_config)
    return {split: sharded.shard_generators(make, [(m, shape_ids[m]) for m in sorted(models)],
                                            f'pix3d_shapes {split}', SHARD_SIZE,
                                            preload=('data_pipelines.pix3d.builder',))
            for split, models in (('train', train_models), ('test', test_models))}
