"""A trained workdir's parameters for inference: `restore_params(workdir)`.

The one way from a training workdir to parameters, used by evaluation, predict, export,
sample and the benchmarks. It reads config.json and statistics.json, then restores from the
orbax checkpoints only what sampling needs (the scene model's EMA or raw parameters, and the
shape autoencoder's parameters), shaped by the models' abstract parameters: no optimizer,
schedule or pretrained backbone file is built or read. The checkpoint reader
(training/checkpoints.py) is the one piece of training/ that inference uses.
"""
import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from scenediff_jax.geometry.normalization import SceneStatistics
from scenediff_jax.models import scene_model, shape_autoencoder
from scenediff_jax.training import checkpoints


class ModelError(ValueError):
  """The path given as a model is not one (its message says what was expected)."""


# What a workdir's config.json must hold to rebuild and restore its model.
CONFIG_SECTIONS = ('shape_model', 'shape_training', 'image_encoder', 'denoiser', 'diffusion',
                   'training', 'eval')


@dataclasses.dataclass(frozen=True)
class TrainedParams:
  """What a trained workdir holds for inference."""
  config: ml_collections.ConfigDict
  statistics: SceneStatistics
  scene: Any  # the scene model's parameters: EMA ones unless config.eval.use_ema is off
  shape: Any  # the shape autoencoder's parameters (the checkpoint statistics.json names)
  step: int  # of the scene checkpoint


def read_config(workdir):
  """The config a workdir was trained with (its config.json).

  Args:
    workdir: the training workdir.
  Returns:
    The ml_collections.ConfigDict.
  Raises:
    FileNotFoundError: there is no config.json.
    ModelError: config.json is not a JSON object, has no positive integer max_objects or
      lacks a section that rebuilds the model.
  """
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    try:
      config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
      raise ModelError(f'{path} is not valid JSON ({error}): {_config_fix(workdir)}') from None
  if not isinstance(config, dict):
    raise ModelError(f'{path} is not a JSON object: {_config_fix(workdir)}')
  n = config.get('max_objects')
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ModelError(f'{path} has no positive integer "max_objects" (got {json.dumps(n)}): '
                     f'{_config_fix(workdir)}')
  missing = [k for k in CONFIG_SECTIONS if not isinstance(config.get(k), dict)]
  if missing:
    raise ModelError(f'{path} lacks the section(s) {", ".join(missing)} that rebuild the '
                     f'model: {_config_fix(workdir)}')
  return ml_collections.ConfigDict(config)


def _config_fix(workdir):
  """What to do about a damaged config.json: the model cannot be rebuilt without it."""
  copy = os.path.join(workdir, 'export', 'config.json')  # every bundle holds one
  if os.path.isfile(copy):
    return f'restore it (the bundle exported from this workdir holds a copy: {copy}).'
  return 'restore it from a copy of the workdir, or train again in a new --workdir.'


def read_statistics(workdir) -> SceneStatistics:
  """The workdir's statistics.json (FileNotFoundError when there is none; ModelError when it
  cannot be read or predates the image size it must record)."""
  path = os.path.join(workdir, 'statistics.json')
  try:
    statistics = SceneStatistics.read(path)
  except FileNotFoundError:
    raise
  except ValueError as error:
    raise ModelError(f'{error}; rerun --mode=train on the workdir to recompute it.') from None
  if statistics.image_size is None:
    raise ModelError(f'{path} has no image_size (written before it existed): add '
                     '"image_size": [height, width] of the training images.')
  return statistics


def _on_one_device(tree):
  """Abstract arrays placed on this process's first device (inference runs on one)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), tree)


def _restore(directory, fields, step=None):
  checkpointer = checkpoints.Checkpointer(directory, read_only=True)
  try:
    if step is not None and step not in checkpointer.all_steps:
      raise ModelError(f'{directory} no longer holds step {step}, which the scene model was '
                       f'trained with (it holds {checkpointer.all_steps}); retrain the scene '
                       'stages in a new --workdir.')
    return checkpointer.restore(fields, step)
  except checkpoints.CheckpointUnreadable as error:
    raise ModelError(str(error)) from None
  finally:
    checkpointer.close()


def restore_params(workdir, config=None, statistics=None, use_ema=None) -> TrainedParams:
  """The parameters of a trained workdir, for sampling.

  Args:
    workdir: the training workdir (config.json, statistics.json, checkpoints/).
    config, statistics: the workdir's, when the caller has read them already.
    use_ema: the EMA parameters (True) or the raw ones (False); default config.eval.use_ema.
  Returns:
    TrainedParams, arrays on one device.
  Raises:
    ModelError: a file is missing, damaged or of another config (the message says which).
  """
  try:
    config = config or read_config(workdir)
    statistics = statistics or read_statistics(workdir)
  except FileNotFoundError as error:
    raise ModelError(f'{workdir} is an incomplete workdir: {error}') from None
  scene_dir, shape_dir = (os.path.join(workdir, 'checkpoints', name) for name in ('scene', 'shape'))
  for directory in (scene_dir, shape_dir):
    if checkpoints.latest_step(directory) is None:
      raise ModelError(f'No checkpoint in {directory}: train it first (python -m '
                       'scenediff_jax.main --mode=train).')
  use_ema = config.eval.use_ema if use_ema is None else use_ema
  which = 'ema_params' if use_ema else 'params'
  scene = _restore(scene_dir, {which: _on_one_device(scene_model.abstract_params(
      config, statistics.image_size)), 'step': _on_one_device(jax.ShapeDtypeStruct((), np.int32))})
  # The autoencoder the scene model was trained with (statistics.json says which step).
  shape = _restore(shape_dir, {'params': _on_one_device(shape_autoencoder.abstract_params(config))},
                   statistics.shape_step)
  return TrainedParams(config, statistics, scene[which], shape['params'], int(scene['step']))
