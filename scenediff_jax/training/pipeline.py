"""The main job's stages in order: data → shape autoencoder → shape latents + statistics →
scene diffusion (→ joint fine-tuning with L_align). Every stage resumes from what the workdir
already holds, so rerunning a finished or interrupted job only does what is missing."""
import dataclasses
import os

from absl import logging

from data_pipelines import registry
from scenediff_jax.training import scene_data, shape_latents, shape_trainer


@dataclasses.dataclass
class Stages:
  """What the scene stages need from the ones before."""
  scenes: object  # the scene dataset's TFDS builder
  shapes: object  # the shape dataset's TFDS builder
  shape_model: object
  shape_params: object
  latents: scene_data.ShapeLatents
  statistics: scene_data.SceneStatistics


def prepare(config, workdir, train_shapes: bool = True) -> Stages:
  """Builds missing data, trains (or restores) the shape autoencoder, encodes every shape and
  fixes the normalisation statistics (workdir/statistics.json)."""
  scenes, shapes = registry.scene_builder(config), registry.shape_builder(config)
  if train_shapes:
    shape_model, shape_params = shape_trainer.train(config, workdir, shapes.as_data_source('train'))
  else:
    shape_model, shape_params = shape_trainer.restore(config, workdir)
  latents = shape_latents.load_or_encode(
      workdir, shape_model, shape_params,
      {s: shapes.as_data_source(s) for s in ('train', 'test')}, config.shape_training.surface_points)
  path = os.path.join(workdir, 'statistics.json')
  if os.path.exists(path):
    with open(path) as f:
      statistics = scene_data.SceneStatistics.from_json(f.read())
  else:
    statistics = scene_data.compute_scene_statistics(
        scenes.as_data_source('train'), config.training.statistics_scenes, latents)
    with open(path + '.tmp', 'w') as f:
      f.write(statistics.to_json())
    os.replace(path + '.tmp', path)
    logging.info('Normalisation statistics written to %s', path)
  return Stages(scenes, shapes, shape_model, shape_params, latents, statistics)


def train(config, workdir) -> Stages:
  """`--mode=train`: every stage, resuming where the workdir left off."""
  from scenediff_jax.training import scene_trainer
  stages = prepare(config, workdir)
  scene_trainer.train(config, workdir, stages.scenes.as_data_source('train'), stages.statistics,
                      stages.latents)
  return stages


def evaluate(config, workdir, stages: Stages = None) -> dict:
  """`--mode=eval`: scores the latest scene checkpoint on config.eval.split."""
  from scenediff_jax.training import scene_eval
  stages = stages or prepare(config, workdir, train_shapes=False)
  return scene_eval.evaluate(config, workdir, stages, registry.true_mesh_fn(config))
