"""Encodes every shape of the dataset with the trained shape autoencoder: the latent table
(Gaussians + intrinsics per shape id) that the scene diffusion learns to generate."""
import os

from absl import logging
import jax
import numpy as np

from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
from scenediff_jax.training.scene_data import ShapeLatents


def encode_shapes(model, params, sources: dict, surface_points: int,
                  batch_size: int = 64) -> ShapeLatents:
  """Codes of every shape in `sources` ({split: shape data source}), from the first
  `surface_points` stored surface points (a fixed subset: a shape always gets the same code)."""
  encode = jax.jit(lambda p, x: model.apply(p, x, method=ShapeAutoencoder.encode))
  ids, gaussians, intrinsics, is_train = [], [], [], []
  for split, source in sources.items():
    for start in range(0, len(source), batch_size):
      examples = [source[i] for i in range(start, min(start + batch_size, len(source)))]
      points = np.stack([e['surface']['points'][:surface_points] for e in examples])
      # A fixed batch shape, so one compilation serves every batch.
      padded = np.concatenate([points, np.repeat(points[-1:], batch_size - len(points), 0)])
      g, z = jax.device_get(encode(params, padded))
      ids.extend(int(e['shape_id']) for e in examples)
      is_train.extend([split == 'train'] * len(examples))
      gaussians.append(g[:len(points)])
      intrinsics.append(z[:len(points)])
  return ShapeLatents(np.asarray(ids, np.int32), np.concatenate(gaussians).astype(np.float32),
                      np.concatenate(intrinsics).astype(np.float32), np.asarray(is_train))


def load_or_encode(workdir, model, params, sources, surface_points) -> ShapeLatents:
  """The table in workdir/shape_latents.npz, encoded (and saved) if it is not there yet."""
  path = os.path.join(workdir, 'shape_latents.npz')
  if os.path.exists(path):
    return ShapeLatents.load(path)
  latents = encode_shapes(model, params, sources, surface_points)
  latents.save(path + '.tmp.npz')
  os.replace(path + '.tmp.npz', path)
  logging.info('Encoded %d shapes into %s', len(latents.shape_ids), path)
  return latents
