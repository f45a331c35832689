"""Encodes every shape of the dataset with the trained shape autoencoder: the latent table
(Gaussians + intrinsics per shape id) that the scene diffusion learns to generate."""
import dataclasses
import os
import zipfile

from absl import logging
import jax
import numpy as np

from scenediff_jax.geometry.normalization import ShapeLatents
from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
from scenediff_jax.training import workdir as workdir_lib

LATENTS_FILE = 'shape_latents.npz'


class StaleDerivedFile(workdir_lib.WorkdirError):
  """A file derived from an earlier stage no longer matches it, and a later stage's
  checkpoints depend on it."""


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


def load_or_encode(workdir, model, params, sources, surface_points, shape_step,
                   keep_recorded: bool = False) -> ShapeLatents:
  """The table in workdir/shape_latents.npz if it was encoded by the autoencoder at
  `shape_step`; otherwise encoded (and saved) anew.

  Args:
    keep_recorded: a scene model was trained on the saved table, so it must not change: a
      table from another step raises StaleDerivedFile, one without a recorded step (older
      workdirs) is kept with a warning.
  """
  path = os.path.join(workdir, LATENTS_FILE)
  if os.path.exists(path):
    try:
      latents = ShapeLatents.load(path)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
      raise workdir_lib.WorkdirError(
          f'{path} cannot be read ({type(error).__name__}: {error}); delete it and rerun '
          '--mode=train to encode the shapes again.') from None
    if latents.shape_step == shape_step:
      return latents
    if keep_recorded:
      if latents.shape_step is None:
        logging.warning('%s does not record which shape checkpoint encoded it (an older '
                        'workdir); assuming step %d.', path, shape_step)
        return dataclasses.replace(latents, shape_step=shape_step)
      raise StaleDerivedFile(
          f'{path} was encoded by the shape autoencoder at step {latents.shape_step}, which the '
          f'scene checkpoints were trained on, but checkpoints/shape is now at step '
          f'{shape_step}. Use a new --workdir for the new shapes, or move checkpoints/scene, '
          f'{LATENTS_FILE} and statistics.json aside to retrain the scene stages here.')
    logging.info('%s was encoded at shape step %s; encoding again at step %d.', path,
                 latents.shape_step, shape_step)
  latents = dataclasses.replace(encode_shapes(model, params, sources, surface_points),
                                shape_step=shape_step)
  latents.save(path + '.tmp.npz')
  os.replace(path + '.tmp.npz', path)
  logging.info('Encoded %d shapes into %s', len(latents.shape_ids), path)
  return latents
