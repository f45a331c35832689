"""Evaluates the scene diffusion on a split (`--mode=eval`): eval/metrics.json, eval/report.md
(with the trivial class-mean baseline beside it) and eval/previews/*.png.

Every scene is sampled and meshed by the same `InferenceModel` that predict and the export
bundle run (inference/trained_model.py), from the EMA parameters (or the raw ones) on oracle
2D detections and cameras, as in the paper's protocol. The batch of scenes starting at index
i of the split is drawn with seed `eval.seed + i` (with `eval.batch_size` = 1, scene i is
exactly what `predict --seed=eval.seed + i` writes for it); with `eval.num_samples` = K > 1
it is sampled K times (`trained_model.sample_seed`) and scored on their consensus
(inference/consensus.py); metrics.json's `first_sample` then scores the poses of the first
sample alone (the paper's one-sample protocol), and `ap3d_15_agreement` ranks the same
boxes by each object's agreement over the K samples instead of confidence 1 (what predict
writes as an object's score). What was scored is kept in eval/predictions.npz (boxes,
layout, Gaussians, intrinsics, seed and agreement of every scene).

With `eval.camera='estimated'` the model is given the pitch and roll estimated from each
image (inference/gravity.py; level when the estimate is not reliable) instead of the true
ones, as predict does for a photo, and metrics.json's `camera` holds the estimator's errors;
the scores stay in the true world frame, so a wrong tilt costs what it costs a user.

Poses give IoU3D / AP3D / layout IoU; L_align is measured from the masked depth points to
points sampled from the predicted Gaussians placed in the scene; Chamfer / F-score come from
meshes extracted for the first `mesh_objects` objects with a ground-truth shape (marching
cubes is the slow part on a CPU). `x0_mse_by_snr` gives the denoiser's one-call x̂₀ error per
noise band on the first batches (training/denoising_error.py).
"""
import os
import time

from absl import logging
import jax
import numpy as np
import tqdm
import trimesh

from data_pipelines import registry
from scenediff_jax import diffusion
from scenediff_jax.evaluation import baseline, evaluator, report
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import camera, gmm
from scenediff_jax.inference import consensus, gravity, restore, scene_preview, trained_model
from scenediff_jax.models import scene_model
from scenediff_jax.training import config_checks, denoising_error, pipeline, scene_data

FIRST_SAMPLE_KEYS = ('iou3d_mean', 'ap3d_15', 'layout_iou')
BAND_ERROR_BATCHES = 2  # batches of the first scenes that also measure x̂₀ error per noise band
SURFACE_SALT = 0x5EED  # keeps the L_align metric's surface draw apart from the samples' seeds


def record_input(record, max_objects, world_to_cam=None):
  """A scene record's model input: its image, camera (or `world_to_cam` in its place) and
  oracle 2D detections."""
  o = record['objects']
  R = record['world_to_cam'] if world_to_cam is None else world_to_cam
  return trained_model.model_input(record['image'], record['K'], R, o['bbox2d'], o['class'],
                                   max_objects)


def estimated_camera(record):
  """(world_to_cam from the image's estimated pitch and roll, level when not reliable; a
  record of the estimate and its errors in degrees)."""
  estimate = gravity.estimate_gravity(record['image'], record['K'])
  pitch, roll = camera.pitch_roll(np.asarray(record['world_to_cam'], np.float64))
  used = (estimate.pitch, estimate.roll) if estimate.reliable else (0.0, 0.0)
  errors = np.degrees(np.abs(np.array(used) - [pitch, roll]))
  raw = np.degrees(np.abs(np.array([estimate.pitch, estimate.roll]) - [pitch, roll]))
  return camera.world_to_cam(*used).astype(np.float32), {
      'pitch_error': float(errors[0]), 'roll_error': float(errors[1]),
      'raw_errors': raw, 'fallback': not estimate.reliable, 'confidence': estimate.confidence}


def _batches(source, indices, batch_size, max_objects, camera_mode='true'):
  """(first index, records, model inputs, camera estimates) over `indices` in batches of
  `batch_size`, the last one filled up with repeats."""
  for start in range(0, len(indices), batch_size):
    # Scenes with more than max_objects objects are scored on the ones the model sees.
    records = [scene_data.limit_objects(source[i], max_objects)
               for i in indices[start:start + batch_size]]
    cameras = ([estimated_camera(r) for r in records] if camera_mode == 'estimated' else
               [(None, None)] * len(records))
    inputs = [record_input(r, max_objects, R) for r, (R, _) in zip(records, cameras)]
    padded = inputs + inputs[-1:] * (batch_size - len(inputs))
    yield start, records, trained_model.batch_inputs(padded), [c for _, c in cameras]


def _error_batches(source, indices, stages, config):
  """Normalised training-style batches of the first scenes, for the x̂₀ error per noise band."""
  e = config.eval
  for start in range(0, min(len(indices), BAND_ERROR_BATCHES * e.batch_size), e.batch_size):
    chunk = indices[start:start + e.batch_size]
    examples = [scene_data.prepare_scene(scene_data.limit_objects(source[i], config.max_objects),
                                         stages.statistics, stages.latents, config.max_objects,
                                         config.training.depth_points,
                                         np.random.default_rng([e.seed, i])) for i in chunk]
    examples += examples[-1:] * (e.batch_size - len(examples))
    yield {k: np.stack([x[k] for x in examples]) for k in examples[0]}


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


def evaluate(config, workdir, stages: pipeline.Stages = None) -> dict:
  """`--mode=eval`: scores the latest scene checkpoint on config.eval.split.

  Args:
    config: the run's config (its model fields are the workdir's; the sampling ones, such
      as eta or the steps, may differ).
    workdir: the trained workdir; the results go to its eval/ (or eval_TAG/).
    stages: the data and derived files, when training has just made them.
  Returns:
    The metrics dict (also in eval/metrics.json).
  """
  stages = stages or pipeline.prepare(config, workdir, train_shapes=False)
  config_checks.check_split(config, registry.splits_of(config, stages.scenes))  # before sampling
  true_mesh = registry.true_mesh_fn(config)
  e, d = config.eval, config.diffusion
  trained = restore.restore_params(workdir, config, stages.statistics)
  model = trained_model.from_trained(trained)
  surface_samples = jax.jit(lambda key, g, boxes: boxes_lib.canonical_to_world(
      gmm.sample(key, g, e.points_per_gaussian).reshape(*g.shape[:2], -1, 3), boxes))
  source = registry.split_source(config, stages.scenes, e.split)
  indices = list(range(len(source) if e.num_scenes <= 0 else min(e.num_scenes, len(source))))

  camera_mode = e.get('camera', 'true')
  if camera_mode not in ('true', 'estimated'):
    raise ValueError(f'eval.camera={camera_mode!r}: use "true" or "estimated".')
  ground_truth, predictions, previews, meshes_left = [], [], [], e.mesh_objects
  first_samples = []  # with K > 1, the first sample's poses alone: the paper's one-sample protocol
  ranked = []  # with K > 1, the consensus boxes with their agreement as confidence
  scored = []  # what each scene was scored on, padded to max_objects, and its seed
  cameras = []  # with estimated cameras, each scene's estimate and errors
  tick = time.perf_counter()
  progress = tqdm.tqdm(total=len(indices), desc=f'eval {e.split}', unit='scene')
  for start, records, inputs, estimates in _batches(source, indices, e.batch_size,
                                                    config.max_objects, camera_mode):
    seed = e.seed + start
    decoded, samples = model.sample_posterior(inputs, seed, e.num_samples, d.sampling_steps,
                                              d.guidance_scale)
    sample_boxes = np.stack([s['boxes'] for s in samples], 1)  # [B, K, N, 7]
    agreement = np.ones(decoded['boxes'].shape[:2])
    for b in range(len(records)):
      if len(samples) > 1:
        agreement[b] = consensus.spread(sample_boxes[b], decoded['boxes'][b])['agreement']
    surfaces = np.asarray(surface_samples(jax.random.fold_in(jax.random.key(seed), SURFACE_SALT),
                                          decoded['gaussians'], decoded['boxes']))
    cameras.extend(c for c in estimates if c is not None)
    for b, record in enumerate(records):
      scored.append({**{k: v[b] for k, v in decoded.items()}, 'seed': seed,
                     'agreement': agreement[b]})
      index = len(predictions)
      rng = np.random.default_rng([e.seed, index])
      truth = _ground_truth(record, e.depth_points, rng)
      n = len(truth['objects']['class'])
      boxes, surface = decoded['boxes'][b, :n], surfaces[b, :n]
      pred_meshes, gt_meshes = [None] * n, [None] * n
      # Only objects with a ground-truth shape are meshed (SUN RGB-D has none).
      with_shape = [k for k in range(n) if truth['objects']['shape_id'][k] >= 0][:meshes_left]
      if with_shape:
        meshes = model.object_meshes(decoded['gaussians'][b, with_shape],
                                     decoded['intrinsics'][b, with_shape], e.mesh_resolution,
                                     e.coarse_resolution)
        for k, mesh in zip(with_shape, meshes):
          # A field without a surface still counts: its empty mesh scores F-score 0.
          pred_meshes[k] = trimesh.Trimesh() if mesh is None else mesh
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
        ranked.append({'class': truth['objects']['class'], 'box3d': boxes,
                       'score': agreement[b, :n]})
      if len(previews) < e.num_previews:
        shown = [boxes_lib.canonical_to_world(np.asarray(m.vertices), boxes[k])
                 if m is not None and len(m.faces) else surface[k]
                 for k, m in enumerate(pred_meshes)]
        previews.append(scene_preview.scene_preview(
            record['image'], record['K'], record['world_to_cam'], record['objects']['box3d'],
            record['objects']['class'], boxes, truth['objects']['class'], shown,
            record['layout'], decoded['layout'][b]))
      progress.update()
  progress.close()
  seconds = time.perf_counter() - tick

  metrics = evaluator.evaluate(ground_truth, predictions)
  metrics.update(config=config.name, step=trained.step, split=e.split,
                 parameters='ema' if e.use_ema else 'raw', seconds=seconds,
                 sampling_steps=config.diffusion.sampling_steps, eta=config.diffusion.eta,
                 num_samples=e.num_samples,
                 guidance_scale=config.diffusion.guidance_scale,
                 prediction=diffusion.prediction_of(config),
                 schedule=config.diffusion.get('schedule', 'linear'))
  if first_samples:
    first = evaluator.evaluate(ground_truth, first_samples)
    metrics['first_sample'] = {k: first[k] for k in FIRST_SAMPLE_KEYS}
    metrics['ap3d_15_agreement'] = evaluator.mean_average_precision(
        [t['objects'] for t in ground_truth], ranked)
  metrics['camera'] = {'source': camera_mode}
  if cameras:
    metrics['camera'].update(
        pitch_error_median=float(np.median([c['pitch_error'] for c in cameras])),
        roll_error_median=float(np.median([c['roll_error'] for c in cameras])),
        pitch_error_mean=float(np.mean([c['pitch_error'] for c in cameras])),
        roll_error_mean=float(np.mean([c['roll_error'] for c in cameras])),
        fallback_share=float(np.mean([c['fallback'] for c in cameras])))
  metrics['x0_mse_by_snr'] = denoising_error.x0_error_by_band(
      scene_model.make_model(config), diffusion.make_schedule(config), config, trained.scene,
      _error_batches(source, indices, stages, config), e.seed)
  trivial = evaluator.evaluate(ground_truth, _baseline_predictions(config, stages, source, indices))
  eval_dir = eval_directory(workdir, config)
  report.write(metrics, eval_dir, title=f'Scene reconstruction, {config.name} {e.split}',
               baselines={'trivial baseline (class means)': trivial})
  scene_preview.save_previews(previews, os.path.join(eval_dir, 'previews'))
  np.savez(os.path.join(eval_dir, 'predictions.npz'), scene_index=np.asarray(indices),
           num_objects=np.asarray([len(t['objects']['class']) for t in ground_truth]),
           **{k: np.stack([p[k] for p in scored]) for k in scored[0]})
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
