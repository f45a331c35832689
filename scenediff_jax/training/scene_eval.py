"""Evaluates the scene diffusion on a split (`--mode=eval`): eval/metrics.json, eval/report.md
(with the trivial class-mean baseline beside it) and eval/previews/*.png.

Every scene is sampled with DDIM from the EMA parameters (or the raw ones) on oracle 2D
detections and cameras, as in the paper's protocol; with `eval.num_samples` = K > 1 it is
sampled K times and scored on their consensus (inference/consensus.py); metrics.json's
`first_sample` then scores the poses of the first sample alone (the paper's one-sample
protocol). Poses give IoU3D / AP3D / layout IoU; L_align is measured from the masked depth
points to points sampled from the predicted Gaussians placed in the scene; Chamfer / F-score
come from meshes extracted for the first `mesh_objects` objects with a ground-truth shape
(marching cubes is the slow part on a CPU). `x0_mse_by_snr` gives the denoiser's one-call x̂₀
error per noise band on the first batches (training/denoising_error.py).
"""
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from data_pipelines import registry
from scenediff_jax import diffusion
from scenediff_jax.evaluation import baseline, evaluator, report
from scenediff_jax.geometry import boxes as boxes_lib, camera, gmm
from scenediff_jax.inference import consensus, mesh as mesh_lib, sampling, scene_preview
from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
from scenediff_jax.training import (checkpoints, denoising_error, scene_data, scene_trainer,
                                    sharding)


FIRST_SAMPLE_KEYS = ('iou3d_mean', 'ap3d_15', 'layout_iou')
BAND_ERROR_BATCHES = 2


def _stack(examples):
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def _batches(source, indices, stages, config):
  """Padded model batches over `indices` (the last one filled up with repeats)."""
  e = config.eval
  for start in range(0, len(indices), e.batch_size):
    chunk = indices[start:start + e.batch_size]
    # Scenes with more than max_objects objects are scored on the ones the model sees.
    records = [scene_data.limit_objects(source[i], config.max_objects) for i in chunk]
    examples = [scene_data.prepare_scene(r, stages.statistics, stages.latents, config.max_objects,
                                         config.training.depth_points,
                                         np.random.default_rng([e.seed, i]))
                for r, i in zip(records, chunk)]
    examples += examples[-1:] * (e.batch_size - len(examples))
    yield records, _stack(examples)


def _ground_truth(record, max_depth_points, rng):
  objects = record['objects']
  depth_points = []
  for k in range(len(objects['class'])):
    points = camera.depth_to_points(record['depth'], record['K'], record['world_to_cam'],
                                    record['instances'] == k)
    if len(points) > max_depth_points:
      points = points[rng.choice(len(points), max_depth_points, replace=False)]
    depth_points.append(points)
  return {'objects': {'class': objects['class'], 'box3d': objects['box3d'],
                      'depth_points': depth_points,
                      'shape_id': objects['shape_id']},
          'layout': record['layout']}


def restore_scene_state(config, workdir, stages, mesh):
  """The latest scene checkpoint, restored into a state shaped like a fresh one."""
  model = scene_trainer.make_model(config)
  source = stages.scenes.as_data_source('train')
  example = scene_data.prepare_scene(source[0], stages.statistics, stages.latents,
                                     config.max_objects, config.training.depth_points,
                                     np.random.default_rng(0))
  example = scene_trainer.device_batch(_stack([example] * mesh.size), mesh)
  if checkpoints.latest_step(f'{workdir}/checkpoints/scene') is None:
    raise FileNotFoundError(f'No scene checkpoint in {workdir}/checkpoints/scene; train first '
                            'with --mode=train.')
  checkpointer = checkpoints.Checkpointer(f'{workdir}/checkpoints/scene', read_only=True)
  state = scene_trainer.restore_state(checkpointer, config, model, example, mesh)
  checkpointer.close()
  return model, state


def evaluate(config, workdir, stages, true_mesh):
  """Scores config.eval.split; `true_mesh(shape_id)` gives a ground-truth canonical mesh."""
  e = config.eval
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    model, state = restore_scene_state(config, workdir, stages, mesh)
  params = state.ema_params if e.use_ema else state.params
  sample = sampling.make_sampler(model, scene_trainer.make_schedule(config), config)
  decode_occupancy = jax.jit(lambda g, i, q: stages.shape_model.apply(
      stages.shape_params, g, i, q, method=ShapeAutoencoder.occupancy))
  surface_samples = jax.jit(lambda key, g, boxes: boxes_lib.canonical_to_world(
      gmm.sample(key, g, e.points_per_gaussian).reshape(*g.shape[:2], -1, 3), boxes))
  source = registry.split_source(config, stages.scenes, e.split)
  indices = list(range(len(source) if e.num_scenes <= 0 else min(e.num_scenes, len(source))))

  ground_truth, predictions, previews, meshes_left = [], [], [], e.mesh_objects
  first_samples = []  # with K > 1, the first sample's poses alone: the paper's one-sample protocol
  error_batches = []  # the first BAND_ERROR_BATCHES batches also measure x̂₀ error per noise band
  tick = time.perf_counter()
  progress = tqdm.tqdm(total=len(indices), desc=f'eval {e.split}', unit='scene')
  for records, batch in _batches(source, indices, stages, config):
    if len(error_batches) < BAND_ERROR_BATCHES:
      error_batches.append(batch)
    key = jax.random.fold_in(jax.random.key(e.seed), len(predictions))
    samples = [sampling.decode(sample(params, batch, key if k == 0 else
                                      jax.random.fold_in(key, 1000 + k)), batch, stages.statistics)
               for k in range(e.num_samples)]
    decoded = consensus.combine(samples, batch['mask'].sum(1)) if len(samples) > 1 else samples[0]
    surfaces = np.asarray(surface_samples(jax.random.fold_in(key, 1), decoded['gaussians'],
                                          decoded['boxes']))
    for b, record in enumerate(records):
      index = len(predictions)
      rng = np.random.default_rng([e.seed, index])
      truth = _ground_truth(record, e.depth_points, rng)
      n = len(truth['objects']['class'])
      boxes, gaussians, surface = (decoded['boxes'][b, :n], decoded['gaussians'][b, :n],
                                   surfaces[b, :n])
      pred_meshes, gt_meshes = [None] * n, [None] * n
      # Only objects with a ground-truth shape are meshed (SUN RGB-D has none).
      with_shape = [k for k in range(n) if truth['objects']['shape_id'][k] >= 0][:meshes_left]
      chosen = np.asarray(with_shape, int)
      occupancy_fn = lambda objects, q: decode_occupancy(
          gaussians[chosen[objects]], decoded['intrinsics'][b, chosen[objects]], jnp.asarray(q))
      meshes, _ = mesh_lib.extract_meshes(
          occupancy_fn, len(chosen), resolution=e.mesh_resolution,
          coarse_resolution=e.coarse_resolution,
          seed_points=list(np.asarray(gmm.axis_points(gaussians[chosen]))))
      for k, mesh in zip(with_shape, meshes):
        pred_meshes[k] = mesh
        gt_meshes[k] = true_mesh(int(truth['objects']['shape_id'][k]))
      meshes_left -= len(with_shape)
      truth['objects']['mesh'] = gt_meshes
      predictions.append({'objects': {'class': truth['objects']['class'], 'box3d': boxes,
                                      'surface_points': list(surface), 'mesh': pred_meshes},
                          'layout': decoded['layout'][b]})
      ground_truth.append(truth)
      if len(samples) > 1:
        first_samples.append({'objects': {'class': truth['objects']['class'],
                                          'box3d': samples[0]['boxes'][b, :n]},
                              'layout': samples[0]['layout'][b]})
      if len(previews) < e.num_previews:
        shown = [boxes_lib.canonical_to_world(np.asarray(m.vertices), boxes[k])
                 if m is not None and len(m.vertices) else surface[k]
                 for k, m in enumerate(pred_meshes)]
        previews.append(scene_preview.scene_preview(
            record['image'], record['K'], record['world_to_cam'], record['objects']['box3d'],
            record['objects']['class'], boxes, truth['objects']['class'], shown,
            record['layout'], decoded['layout'][b]))
      progress.update()
  progress.close()
  seconds = time.perf_counter() - tick

  metrics = evaluator.evaluate(ground_truth, predictions)
  metrics.update(config=config.name, step=int(state.step), split=e.split,
                 parameters='ema' if e.use_ema else 'raw', seconds=seconds,
                 sampling_steps=config.diffusion.sampling_steps, eta=config.diffusion.eta,
                 num_samples=e.num_samples,
                 guidance_scale=config.diffusion.guidance_scale,
                 prediction=diffusion.prediction_of(config),
                 schedule=config.diffusion.get('schedule', 'linear'))
  if first_samples:
    first = evaluator.evaluate(ground_truth, first_samples)
    metrics['first_sample'] = {k: first[k] for k in FIRST_SAMPLE_KEYS}
  metrics['x0_mse_by_snr'] = denoising_error.x0_error_by_band(
      model, scene_trainer.make_schedule(config), config, params, error_batches, e.seed)
  trivial = evaluator.evaluate(ground_truth, _baseline_predictions(config, stages, source, indices))
  eval_dir = eval_directory(workdir, config)
  report.write(metrics, eval_dir, title=f'Scene reconstruction, {config.name} {e.split}',
               baselines={'trivial baseline (class means)': trivial})
  scene_preview.save_previews(previews, os.path.join(eval_dir, 'previews'))
  logging.info('Evaluated %d scenes in %.0f s: AP3D@15 %.2f (baseline %.2f), IoU3D %.2f '
               '(baseline %.2f); report in %s', len(indices), seconds, metrics['ap3d_15'] or 0,
               trivial['ap3d_15'] or 0, metrics['iou3d_mean'] or 0, trivial['iou3d_mean'] or 0,
               eval_dir)
  return metrics


def eval_directory(workdir, config):
  """workdir/eval, or workdir/eval_TAG with eval.tag (side-by-side evaluations of one model)."""
  tag = config.eval.get('tag', '')
  return os.path.join(workdir, f'eval_{tag}' if tag else 'eval')


def _baseline_predictions(config, stages, source, indices):
  """Each detection gets its class's mean size, yaw and distance (from training scenes)."""
  train = stages.scenes.as_data_source('train')
  fit = [train[i] for i in range(min(config.training.statistics_scenes, len(train)))]
  priors = baseline.fit_priors([r['objects']['class'] for r in fit],
                               [r['objects']['box3d'] for r in fit],
                               np.stack([r['layout'] for r in fit]))
  out = []
  for i in indices:
    r = scene_data.limit_objects(source[i], config.max_objects)
    out.append(baseline.predict_scene(priors, r['objects']['class'], r['objects']['bbox2d'],
                                      r['K'], r['world_to_cam']))
  return out
