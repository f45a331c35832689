"""Sampling: one 10-object scene (DDIM 100 steps, then a mesh per object), split into
denoising and meshing time; and, given a trained workdir and SynthRooms, DDPM 1000 against
DDIM 100, 50 and 25 steps with the pose metrics each gives on test scenes."""
import time

import jax
import numpy as np

from scenediff_jax.benchmark import timing, train_step
from scenediff_jax.inference import trained_model

OBJECTS = 10


def random_model(config) -> trained_model.InferenceModel:
  """An untrained model of `config` (times only: its scenes and meshes mean nothing)."""
  from scenediff_jax.models import scene_model, shape_autoencoder

  batch = train_step.random_batch(config, 1)
  noisy = {k: batch[k] for k in ('layout', 'pose', 'gaussians', 'intrinsics')}
  params = jax.jit(scene_model.make_model(config).init)(jax.random.key(0), batch, noisy,
                                                        np.zeros(1, np.int32))
  points = np.zeros((1, 64, 3), np.float32)
  shape_params = shape_autoencoder.make_model(config).init(jax.random.key(1), points, points)
  return trained_model.from_parameters(config, train_step.plausible_statistics(config), params,
                                       shape_params, source='random init')


def scene_inputs(model, objects=OBJECTS, seed=0) -> dict:
  """One scene with `objects` random detections at the model's input size."""
  rng = np.random.default_rng(seed)
  n = min(objects, model.max_objects)
  K, bbox2d = train_step.random_camera_and_boxes(rng, (n,), model.image_size)
  return trained_model.batch_inputs([trained_model.model_input(
      rng.integers(0, 256, (*model.image_size, 3), np.uint8), K, np.eye(3), bbox2d,
      rng.integers(0, 10, n), model.max_objects)])


def time_one_scene(model, steps, mesh_resolutions, repeats) -> dict:
  """Denoising (median of `repeats`) and meshing all objects at each resolution (once each,
  after a compile on a small grid) of one scene."""
  inputs = scene_inputs(model)
  start = time.perf_counter()
  scene = model.sample_scene(inputs, 0, steps, 1.0)
  first = time.perf_counter() - start
  denoise = timing.median_seconds(lambda: model.sample_scene(inputs, 0, steps, 1.0), repeats, 0)
  objects = int(inputs['mask'].sum())
  gaussians, intrinsics = scene['gaussians'][0, :objects], scene['intrinsics'][0, :objects]
  model.object_meshes(gaussians[:1], intrinsics[:1], 32)  # compiles the decoder call
  meshing = {}
  for resolution in mesh_resolutions:
    start = time.perf_counter()
    meshes = model.object_meshes(gaussians, intrinsics, resolution)
    seconds = time.perf_counter() - start
    meshing[str(resolution)] = {'mesh_seconds': seconds, 'total_seconds': denoise + seconds,
                                'meshes_with_surface': sum(m is not None for m in meshes)}
  return {'objects': objects, 'ddim_steps': steps, 'first_call_seconds': first,
          'denoise_seconds': denoise, 'meshes': meshing,
          'finite': bool(all(np.all(np.isfinite(v)) for v in jax.tree.leaves(scene)))}


def pose_metrics_by_sampler(workdir, scenes, batch_size=50, seed=0) -> dict:
  """IoU3D, AP3D@15 and layout IoU of DDPM (DDIM with η = 1 over all T steps, the same
  update; tests/test_diffusion.py) and DDIM 100/50/25 (η = 0) on the first `scenes`
  SynthRooms test scenes of a trained workdir, sampled as evaluation samples them
  (jobs/scene_eval.py); seconds per scene for each."""
  from data_pipelines import registry
  from scenediff_jax.evaluation import evaluator
  from scenediff_jax.inference import restore
  from scenediff_jax.jobs import scene_eval

  trained = restore.restore_params(workdir)
  config = trained.config
  source = registry.scene_builder(config, prepare=False).as_data_source('test')
  records = [source[i] for i in range(min(scenes, len(source)))]
  ground_truth = [{'objects': {'class': r['objects']['class'], 'box3d': r['objects']['box3d']},
                   'layout': r['layout']} for r in records]
  rows = {}
  for name, steps, eta in (('ddpm_1000', config.diffusion.num_timesteps, 1.0),
                           ('ddim_100', 100, 0.0), ('ddim_50', 50, 0.0), ('ddim_25', 25, 0.0)):
    with config.unlocked():
      config.diffusion.eta = eta
    model = trained_model.from_parameters(config, trained.statistics, trained.scene,
                                          trained.shape)
    predictions, start = [], time.perf_counter()
    for first in range(0, len(records), batch_size):
      chunk = records[first:first + batch_size]
      inputs = trained_model.batch_inputs([scene_eval.record_input(r, config.max_objects)
                                           for r in chunk])
      decoded = model.sample_scene(inputs, seed + first, steps, 1.0)
      for b, r in enumerate(chunk):
        n = len(r['objects']['class'])
        predictions.append({'objects': {'class': r['objects']['class'],
                                        'box3d': decoded['boxes'][b, :n]},
                            'layout': decoded['layout'][b]})
    seconds = time.perf_counter() - start
    m = evaluator.evaluate(ground_truth, predictions)
    rows[name] = {'steps': steps, 'eta': eta, 'iou3d': m['iou3d_mean'], 'ap3d_15': m['ap3d_15'],
                  'layout_iou': m['layout_iou'], 'seconds_per_scene': seconds / len(records)}
  return {'scenes': len(records), **rows}


def bench_sampling(quick: bool, load_config, model_path=None, eval_scenes=100,
                   variant='default') -> dict:
  if model_path:
    model, source = trained_model.load(model_path), model_path
  else:
    model, source = random_model(load_config('smoke' if quick else variant)), None
  result = {'model': source or 'random init (times only)', 'model_kind': model.source,
            'one_scene': time_one_scene(model, 20 if quick else 100,
                                        (32,) if quick else (64, 128), 2 if quick else 3)}
  if model_path and trained_model.is_workdir(model_path) and eval_scenes > 0:
    result['samplers'] = pose_metrics_by_sampler(model_path, eval_scenes)
  else:
    result['samplers'] = 'needs --model=a trained workdir (and its SynthRooms data)'
  result['check'] = {'passed': result['one_scene']['finite'],
                     'what': 'sampled boxes, layouts and codes are finite'}
  return result
