"""Input pipeline of the shape autoencoder: SynthRooms canonical shapes through grain.

Each example gives `surface` [P, 3] surface points and `queries` [Q, 3] with `inside` [Q]
labels, subsampled from the stored 4,096 / 8,192 with a generator seeded by (seed, epoch,
index), so batch i of a run is the same on every restart.
"""
import grain
import numpy as np


class _Subsample(grain.transforms.RandomMap):
  def __init__(self, surface_points, occupancy_points, near_surface_share):
    self.surface_points, self.occupancy_points = surface_points, occupancy_points
    self.near_surface_share = near_surface_share

  def random_map(self, example, rng: np.random.Generator):
    surface = example['surface']['points']
    queries, inside = example['occupancy']['points'], example['occupancy']['inside']
    s = rng.choice(len(surface), self.surface_points, replace=False)
    if self.near_surface_share < 0:  # any stored query alike
      q = rng.choice(len(queries), self.occupancy_points, replace=False)
    else:  # the stored queries are the uniform ones, then the near-surface ones
      half = len(queries) // 2
      near = int(round(self.near_surface_share * self.occupancy_points))
      q = np.concatenate([rng.choice(half, self.occupancy_points - near, replace=False),
                          half + rng.choice(len(queries) - half, near, replace=False)])
    return {'surface': surface[s], 'queries': queries[q], 'inside': inside[q].astype(np.float32),
            'class': np.int32(example['class']), 'shape_id': np.int32(example['shape_id'])}


def shape_batches(source, batch_size, surface_points, occupancy_points, seed,
                  near_surface_share=-1.0):
  """An endless, shuffled, random-access dataset of batches: `dataset[step]` is batch `step`.

  `near_surface_share` of each shape's queries come from its near-surface samples and the
  rest from its uniform ones (data_pipelines/features.py stores them in that order); a
  negative share draws from all stored queries alike (about half and half)."""
  if len(source) == 0:
    raise ValueError('The shape dataset is empty; build it with --mode=build_data first.')
  return (grain.MapDataset.source(source)
          .seed(seed)
          .shuffle()
          .repeat()
          .random_map(_Subsample(surface_points, occupancy_points, near_surface_share))
          .batch(batch_size, drop_remainder=True))
