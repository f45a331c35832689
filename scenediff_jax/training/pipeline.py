"""The main job's stages in order: data → shape autoencoder → shape latents + statistics →
scene diffusion (→ joint fine-tuning with L_align). Every stage resumes from what the workdir
already holds, so rerunning a finished or interrupted job only does what is missing."""
import dataclasses
import os

from absl import logging

from data_pipelines import registry
from scenediff_jax.geometry.normalization import SceneStatistics, ShapeLatents
from scenediff_jax.training import checkpoints, scene_data, shape_latents, shape_trainer
from scenediff_jax.training import workdir as workdir_lib

STATISTICS_FILE = 'statistics.json'


@dataclasses.dataclass
class Stages:
  """What the scene stages need from the ones before."""
  scenes: object  # the scene dataset's TFDS builder
  shapes: object  # the shape dataset's TFDS builder
  shape_model: object
  shape_params: object
  latents: ShapeLatents
  statistics: SceneStatistics


def prepare(config, workdir, train_shapes: bool = True) -> Stages:
  """Builds missing data, trains (or restores) the shape autoencoder, encodes every shape and
  fixes the normalisation statistics (workdir/statistics.json).

  Each derived file records the shape checkpoint step it comes from and is rebuilt when that
  changed; once scene checkpoints exist, which were trained on them, nothing under them may
  change, and a run that would change it stops first (StaleDerivedFile).
  """
  scenes, shapes = registry.scene_builder(config), registry.shape_builder(config)
  scene_trained = _scene_trained(workdir)
  shape_dir = os.path.join(workdir, 'checkpoints', 'shape')
  if train_shapes and not scene_trained:
    shape_model, shape_params = shape_trainer.train(config, workdir, shapes.as_data_source('train'))
    shape_step = checkpoints.latest_step(shape_dir)
  else:  # eval, or a scene model trained on this autoencoder: restored as it is, not retrained
    if train_shapes:
      check_resumable(config, workdir)
    recorded = _recorded_shape_step(workdir)
    shape_model, shape_params = shape_trainer.restore(config, workdir, recorded)
    shape_step = recorded if recorded is not None else checkpoints.latest_step(shape_dir)
  latents = shape_latents.load_or_encode(
      workdir, shape_model, shape_params,
      {s: shapes.as_data_source(s) for s in ('train', 'test')},
      config.shape_training.surface_points,
      shape_step, keep_recorded=scene_trained)
  statistics = load_or_compute_statistics(workdir, scenes, config, latents,
                                          keep_recorded=scene_trained)
  return Stages(scenes, shapes, shape_model, shape_params, latents, statistics)


def _scene_trained(workdir) -> bool:
  return checkpoints.latest_step(os.path.join(workdir, 'checkpoints', 'scene')) is not None


def check_resumable(config, workdir) -> None:
  """StaleDerivedFile when training `config` in `workdir` would change a stage that the
  scene checkpoints there were trained on (more shape autoencoder steps)."""
  if not _scene_trained(workdir):
    return
  done = checkpoints.latest_step(os.path.join(workdir, 'checkpoints', 'shape')) or 0
  wanted = config.shape_training.steps
  if done < wanted:
    raise shape_latents.StaleDerivedFile(
        f'The scene checkpoints in {workdir} were trained on the shape autoencoder at step '
        f'{done}; --config.shape_training.steps={wanted} would train it further under them. '
        f'Keep --config.shape_training.steps={done} here, or use a new --workdir.')


def _recorded_shape_step(workdir):
  path = os.path.join(workdir, STATISTICS_FILE)
  return workdir_lib.read_statistics(path).shape_step if os.path.exists(path) else None


def load_or_compute_statistics(workdir, scenes, config, latents, keep_recorded: bool = False):
  """workdir/statistics.json if it was computed from these latents (same shape step) with the
  config's latent normalisation; otherwise computed anew and written. `keep_recorded`: as in
  shape_latents.load_or_encode (the scene model's own statistics are kept as they are)."""
  path = os.path.join(workdir, STATISTICS_FILE)
  normalization = config.training.get('latent_normalization', 'channel')
  if os.path.exists(path):
    statistics = workdir_lib.read_statistics(path)
    same_normalization = statistics.latent_normalization == normalization
    if statistics.shape_step == latents.shape_step and (same_normalization or keep_recorded):
      return statistics
    if keep_recorded:
      if statistics.shape_step is None:
        logging.warning('%s does not record its shape step (an older workdir); assuming %d.',
                        path, latents.shape_step)
        return dataclasses.replace(statistics, shape_step=latents.shape_step)
      raise shape_latents.StaleDerivedFile(
          f'{path} was computed from shape latents of step {statistics.shape_step}, which the '
          f'scene checkpoints were trained on, but the latents are of step '
          f'{latents.shape_step}. Use a new --workdir, or move checkpoints/scene and '
          f'{STATISTICS_FILE} aside to retrain the scene stages here.')
    logging.info('%s was computed at shape step %s with %s latent normalisation; computing it '
                 'again.', path, statistics.shape_step, statistics.latent_normalization)
  statistics = dataclasses.replace(
      scene_data.compute_scene_statistics(scenes.as_data_source('train'),
                                          config.training.statistics_scenes, latents,
                                          normalization),
      shape_step=latents.shape_step)
  with open(path + '.tmp', 'w') as f:
    f.write(statistics.to_json())
  os.replace(path + '.tmp', path)
  logging.info('Normalisation statistics written to %s', path)
  return statistics


def train(config, workdir) -> Stages:
  """`--mode=train`: every stage, resuming where the workdir left off."""
  from scenediff_jax.training import scene_trainer
  stages = prepare(config, workdir)
  scene_trainer.train(config, workdir, stages.scenes.as_data_source('train'), stages.statistics,
                      stages.latents)
  return stages
