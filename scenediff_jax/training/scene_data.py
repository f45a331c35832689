"""Input pipeline of the scene diffusion: scene records → fixed-size, normalised, padded batches.

One example (numpy, every array fixed-size so one compiled step serves every batch):
  image uint8 [H, W, 3], K [3, 3], world_to_cam [3, 3]
  class int32 [N], bbox2d [N, 4], mask bool [N]           N = config.max_objects
  pose [N, 7], layout [7]                                  normalised (SceneStatistics)
  gaussians [N, g, 16], intrinsics [N, g, d], has_shape [N]  normalised shape latents
  depth_points [N, P, 3], depth_mask [N, P]               world-frame depth points inside
                                                           each instance mask (for L_align)
Scenes with more than N objects keep the N with the most visible pixels.
"""
import functools

import grain
import jax
import numpy as np

from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import camera
from scenediff_jax.geometry import pose as pose_lib
from scenediff_jax.geometry.normalization import (
  SceneStatistics,
  ShapeLatents,
  Statistics,
  compute_statistics,
)

# Pose and layout fields are centred on the median and scaled to about unit spread: the scale
# is the 68% quantile of |x − μ| (σ for a Gaussian, but blind to outliers), and values are
# clipped to ±POSE_CLIP.
# Unit spread matters for diffusion: scaled by the largest deviation instead, the typical
# |x| was 0.1–0.3, every timestep past t ≈ 100 was nearly pure noise, and DDIM samples came
# out worse than predicting the mean (measured on SynthRooms). The clip removes the few
# outliers: δ of objects whose centre is near the camera plane reaches ~80 image sizes.
POSE_QUANTILE = 0.68
POSE_CLIP = 4.0
SHAPE_FRACTION_SALT = 77  # keeps the known-shape draw apart from other uses of the seed


def image_size(record):
  height, width = record['image'].shape[:2]
  return np.array([width, height], np.float32)


def kept_objects(record, max_objects):
  """Indices of the objects a scene keeps under `max_objects`: the most visible ones."""
  objects = record['objects']
  n = len(objects['class'])
  if n <= max_objects:
    return np.arange(n)
  if 'visible_pixels' in objects:
    visible = objects['visible_pixels']
  else:
    visible = np.prod(objects['bbox2d'][:, 2:] - objects['bbox2d'][:, :2], -1)
  return np.sort(np.argsort(-visible, kind='stable')[:max_objects])


def limit_objects(record, max_objects):
  """The record with only its `kept_objects` (instance map renumbered to match)."""
  n = len(record['objects']['class'])
  keep = kept_objects(record, max_objects)
  if len(keep) == n:
    return record
  remap = np.full(n + 1, -1, np.int32)
  remap[keep + 1] = np.arange(len(keep), dtype=np.int32)
  return {**record, 'instances': remap[record['instances'] + 1],
          'objects': {k: v[keep] for k, v in record['objects'].items()}}


def object_poses(record):
  """Un-normalised pose vectors [n, 7] of a record's objects."""
  o = record['objects']
  return pose_lib.box_to_pose(o['box3d'].astype(np.float64), o['bbox2d'].astype(np.float64),
                              record['K'].astype(np.float64),
                              record['world_to_cam'].astype(np.float64), image_size(record))


def has_layout(record) -> bool:
  """Whether a record has a room box: Pix3D's all-zero layout means none."""
  return bool(np.all(record['layout'][3:6] > 0))


LATENT_NORMALIZATIONS = ('channel', 'part')


def latent_statistics(latents: np.ndarray, normalization: str) -> Statistics:
  """Mean and spread of the training shapes' latents [S, g, c].

  'channel' pools the g parts (mean, scale [c]); 'part' keeps them apart (mean, scale
  [g, c]). The autoencoder gives part k a consistent role, so pooled statistics leave each
  part off-centre and shrunk: on SynthRooms the within-part spread after 'channel' has a
  median of 0.33 for the Gaussians, far below the noise the diffusion adds.
  """
  x = np.asarray(latents, np.float64)
  if normalization == 'channel':
    x = x.reshape(-1, x.shape[-1])
  elif normalization != 'part':
    raise ValueError(f"training.latent_normalization must be one of "
                     f"{', '.join(LATENT_NORMALIZATIONS)}, not {normalization!r}.")
  return Statistics(x.mean(0), np.maximum(x.std(0), 1e-4))  # no periodic fields among them


def compute_scene_statistics(source, num_scenes: int, latents: ShapeLatents,
                             latent_normalization: str = 'channel') -> SceneStatistics:
  """Pose and layout statistics from the first scenes of a split; latent ones from the
  training shapes of the table (`latent_statistics`)."""
  poses, layouts = [], []
  for i in range(min(num_scenes, len(source))):
    record = source[i]
    poses.append(object_poses(record))
    if has_layout(record):
      layouts.append(boxes_lib.quarter_turn_canonical(record['layout'].astype(np.float64)))
  train = latents.is_train
  # Yaw (uniform-ish on [−π, π)) gets scale π/2: a spread near 1 like the other fields.
  robust = functools.partial(compute_statistics, quantile=POSE_QUANTILE, robust=True,
                             periodic_scale=np.pi / 2)
  # Room yaw, once canonical (boxes.quarter_turn_canonical), is no longer periodic.
  return SceneStatistics(pose=robust(np.concatenate(poses)),
                         layout=(robust(np.stack(layouts), periodic_fields=()) if layouts
                                 else Statistics(np.zeros(7), np.ones(7))),
                         gaussians=latent_statistics(latents.gaussians[train],
                                                     latent_normalization),
                         intrinsics=latent_statistics(latents.intrinsics[train],
                                                      latent_normalization),
                         image_size=tuple(int(n) for n in source[0]['image'].shape[:2]))


def depth_samples(record, keep, count, rng):
  """`count` world points per kept object, drawn (with replacement when there are fewer)
  from the valid depth pixels inside its instance mask; mask False where it has none."""
  instances, depth = record['instances'], record['depth']
  valid = (instances >= 0) & (depth > 0)
  rows, cols = np.nonzero(valid)
  owners = instances[rows, cols]
  points = np.zeros((len(keep), count, 3), np.float32)
  mask = np.zeros((len(keep), count), bool)
  for slot, k in enumerate(keep):
    mine = np.nonzero(owners == k)[0]
    if len(mine) == 0:
      continue
    pick = rng.choice(mine, count, replace=len(mine) < count)
    pixels = np.stack([cols[pick], rows[pick]], -1).astype(np.float64)
    points[slot] = camera.back_project(pixels, depth[rows[pick], cols[pick]].astype(np.float64),
                                       record['K'].astype(np.float64),
                                       record['world_to_cam'].astype(np.float64))
    mask[slot] = True
  return points, mask


def shapes_known(scene_id: int, fraction: float, seed: int) -> bool:
  """Whether a training scene keeps its shape ground truth when only `fraction` of scenes
  do (training.shape_fraction): a fixed draw per scene, the same in every epoch and run."""
  draw = np.random.default_rng([seed, SHAPE_FRACTION_SALT, scene_id]).random()
  return fraction >= 1 or draw < fraction


def prepare_scene(record, statistics: SceneStatistics, latents: ShapeLatents, max_objects: int,
                  depth_points: int, rng: np.random.Generator, shape_known: bool = True) -> dict:
  """One record → one fixed-size example (see the module docstring). With shape_known False
  no object has a shape target (like SUN RGB-D): only poses and L_align train on it."""
  keep = kept_objects(record, max_objects)
  objects = {k: v[keep] for k, v in record['objects'].items()}
  n, g, d = len(keep), latents.gaussians.shape[1], latents.intrinsics.shape[2]
  pad = lambda x, fill=0: np.concatenate(
      [x, np.full((max_objects - n,) + x.shape[1:], fill, x.dtype)])

  poses = np.clip(statistics.pose.normalize(object_poses({**record, 'objects': objects})),
                  -POSE_CLIP, POSE_CLIP)
  rows = latents.rows(objects['shape_id']) if shape_known else np.full(n, -1)
  has_shape = rows >= 0
  gaussians = np.zeros((n, g, latents.gaussians.shape[2]), np.float32)
  intrinsics = np.zeros((n, g, d), np.float32)
  gaussians[has_shape] = statistics.gaussians.normalize(latents.gaussians[rows[has_shape]])
  intrinsics[has_shape] = statistics.intrinsics.normalize(latents.intrinsics[rows[has_shape]])
  points, point_mask = depth_samples(record, keep, depth_points, rng)
  return {
      'image': record['image'],
      'K': record['K'].astype(np.float32),
      'world_to_cam': record['world_to_cam'].astype(np.float32),
      'class': pad(objects['class'].astype(np.int32)),
      'bbox2d': pad(objects['bbox2d'].astype(np.float32)),
      'mask': pad(np.ones(n, bool)),
      'pose': pad(poses.astype(np.float32)),
      'layout': np.clip(statistics.layout.normalize(
          boxes_lib.quarter_turn_canonical(record['layout'].astype(np.float64))),
                        -POSE_CLIP, POSE_CLIP).astype(np.float32),
      'layout_mask': np.bool_(has_layout(record)),
      'gaussians': pad(gaussians),
      'intrinsics': pad(intrinsics),
      'has_shape': pad(has_shape),
      'depth_points': pad(points),
      'depth_mask': pad(point_mask),
  }


class _Prepare(grain.transforms.RandomMap):
  def __init__(self, statistics, latents, max_objects, depth_points, shape_fraction, seed):
    self.args = (statistics, latents, max_objects, depth_points)
    self.shape_fraction, self.seed = shape_fraction, seed

  def random_map(self, record, rng: np.random.Generator):
    known = shapes_known(int(record['scene_id']), self.shape_fraction, self.seed)
    return prepare_scene(record, *self.args, rng, shape_known=known)


def training_batches(source, statistics, latents, config, process_index=None,
                     process_count=None):
  """Endless shuffled batches; `dataset[step]` is batch `step` on every run (for resuming).

  With several processes each reads only its rows: process p gets block p (of
  batch_size / process_count examples) of every global batch, so the global batch of a
  step is the same whatever the number of processes.
  """
  if len(source) == 0:
    raise ValueError('The scene dataset is empty; build it with --mode=build_data first.')
  t = config.training
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if t.batch_size % count:
    raise ValueError(f'training.batch_size={t.batch_size} must be a multiple of the {count} '
                     'processes.')
  batches = (grain.MapDataset.source(source)
             .seed(t.seed)
             .shuffle()
             .repeat()
             .random_map(_Prepare(statistics, latents, config.max_objects, t.depth_points,
                                  t.get('shape_fraction', 1.0), t.seed))
             .batch(t.batch_size // count, drop_remainder=True))
  return batches[index::count] if count > 1 else batches


def prefetched(batches, start_step: int, num_threads: int = 2):
  """Iterates batches[start_step:] with background reading and preprocessing."""
  return iter(batches[start_step:].to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)))
