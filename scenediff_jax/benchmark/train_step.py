"""The scene-diffusion train step (forward, backward, AdamW, EMA; one jit): seconds to
compile init and the step, steps/s, scenes/s, FLOPs per step from XLA's cost analysis
(L_align's tiled search sits in a loop whose body counts once: its FLOPs are undercounted),
and achieved FLOP/s as a share of the matrix-product peak measured in the same run for the
config's compute dtype (model FLOP/s utilisation, MFU). Both stages: `diffusion` (L_pose +
L_shape) and `joint` (+ λ·L_align). Then a restart: a new process (restart.py) initialises
and runs its first step with the persistent compilation cache that this run filled. Random
batches of the right shapes stand in for data, so any machine can run it."""
import json
import os
import subprocess
import sys
import time

from absl import logging
import jax
import numpy as np

from scenediff_jax import diffusion
from scenediff_jax.benchmark import timing
from scenediff_jax.geometry import camera
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.geometry.normalization import SceneStatistics, Statistics
from scenediff_jax.models.scene_model import compute_dtype, make_model
from scenediff_jax.training import scene_trainer, sharding

IMAGE_SIZE = (192, 256)  # SynthRooms
STAGES = ('diffusion', 'joint')


def random_camera_and_boxes(rng, shape, image_size=IMAGE_SIZE):
  """(K [3, 3], boxes [*shape, 4]): a Kinect-like camera and random boxes inside the image."""
  h, w = image_size
  corner = rng.uniform(0, 0.7, shape + (2,)) * [w, h]
  extent = rng.uniform(0.05, 0.3, shape + (2,)) * [w, h]
  K = camera.intrinsics(0.83 * w, (w - 1) / 2, (h - 1) / 2)
  return K, np.concatenate([corner, corner + extent], -1).astype(np.float32)


def random_batch(config, batch_size, image_size=IMAGE_SIZE, seed=0) -> dict:
  """A training batch (scene_trainer.MODEL_INPUTS) with plausible random values."""
  rng = np.random.default_rng(seed)
  n, g = config.max_objects, config.shape_model.num_parts
  d, p = config.shape_model.intrinsic_size, config.training.depth_points
  K, bbox2d = random_camera_and_boxes(rng, (batch_size, n), image_size)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {
      'image': rng.integers(0, 256, (batch_size, *image_size, 3), np.uint8),
      'K': np.broadcast_to(K, (batch_size, 3, 3)).astype(np.float32),
      'world_to_cam': np.broadcast_to(np.eye(3), (batch_size, 3, 3)).astype(np.float32),
      'class': rng.integers(0, len(CLASSES), (batch_size, n)).astype(np.int32),
      'bbox2d': bbox2d,
      'mask': np.arange(n) < rng.integers(n // 2, n + 1, (batch_size, 1)),
      'layout': normal(batch_size, 7), 'layout_mask': np.ones(batch_size, bool),
      'pose': normal(batch_size, n, 7),
      'gaussians': normal(batch_size, n, g, 16), 'intrinsics': normal(batch_size, n, g, d),
      'has_shape': np.ones((batch_size, n), bool),
      'depth_points': normal(batch_size, n, p, 3) * 0.3 + np.float32([0, 0, 3]),
      'depth_mask': np.ones((batch_size, n, p), bool),
  }


def plausible_statistics(config) -> SceneStatistics:
  """Normalisation that puts random normalised poses a few metres in front of the camera."""
  s = config.shape_model
  unit = lambda size: Statistics(np.zeros(size), np.ones(size))
  return SceneStatistics(
      pose=Statistics(np.array([0, 0, 3, 1, 1, 1, 0.0]), np.array([0.1, 0.1, 1, .3, .3, .3, 1.6])),
      layout=Statistics(np.array([0, 0.5, 2, 5, 2.8, 5, 0]), np.ones(7)),
      gaussians=unit(16), intrinsics=unit(s.intrinsic_size), image_size=IMAGE_SIZE)


def host_initial_state(config, model, batch, mesh):
  """scene_trainer.initial_state, but created on the host CPU (from a host `batch`) and then
  placed on the mesh."""
  with jax.default_device(jax.devices('cpu')[0]):
    return scene_trainer.initial_state(config, model, batch, mesh)


def bench_config(config, peak_flops, repeats, stages=STAGES, init_on_host=False) -> dict:
  """The stages of one config: compile seconds, seconds per step, FLOPs, MFU.

  `init_on_host`: create the state on the host CPU, then place it (an experiment: an H200
  took 182 s to compile the paper-size init, a 2-core CPU 38 s).
  """
  t = config.training
  model, schedule = make_model(config), diffusion.make_schedule(config)
  statistics = plausible_statistics(config)
  mesh = sharding.make_mesh()
  rows = {'batch_size': t.batch_size, 'init_on_host': init_on_host,
          'compute_dtype': compute_dtype(config).name}
  host_batch = random_batch(config, t.batch_size)
  start = time.perf_counter()
  if init_on_host:
    state = host_initial_state(config, model, host_batch, mesh)
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(host_batch, mesh)
    if not init_on_host:
      state = scene_trainer.initial_state(config, model, batch, mesh)
    state = jax.block_until_ready(state)
    rows['init_seconds'] = time.perf_counter() - start  # compiling init, mostly
    rows['parameters'] = int(sum(x.size for x in jax.tree.leaves(state.params)))
    logging.info('%s: %d parameters initialised in %.1f s; compiling the train step ...',
                 config.name, rows['parameters'], rows['init_seconds'])
    train_step = scene_trainer.make_train_step(model, schedule, statistics, config)
    for stage in stages:
      # As the trainer compiles it: traced, compiled and its executable written for the
      # restart below (executable_cache), when the persistent cache is on.
      args = (state, batch, jax.random.key(0), stage == 'joint')
      start = time.perf_counter()
      compiled = train_step.compile(*args)
      compile_time = time.perf_counter() - start
      flops = timing.lowered_flops(train_step.lower(*args))
      logging.info('%s %s: compiled in %.1f s', config.name, stage, compile_time)
      holder = {'state': state}

      def step():
        holder['state'], holder['metrics'] = compiled(holder['state'], batch, jax.random.key(1))
        jax.block_until_ready(holder['metrics'])

      seconds = timing.median_seconds(step, repeats)
      state = holder['state']
      rows[stage] = {
          'compile_seconds': compile_time, 'seconds_per_step': seconds,
          'steps_per_second': 1 / seconds, 'scenes_per_second': t.batch_size / seconds,
          'flops_per_step': flops,
          'flops_per_second': flops and flops / seconds,
          'mfu': flops and flops / seconds / peak_flops,
          'loss_finite': bool(np.isfinite(float(holder['metrics']['loss']))),
      }
      logging.info('%s %s: %s', config.name, stage, json.dumps(rows[stage]))
  return rows


def restart_seconds(config_file, variant, stage, dtype) -> dict:
  """restart.py's seconds for a config variant, in a new process with this run's cache."""
  command = [sys.executable, '-m', 'scenediff_jax.benchmark.restart', config_file, variant,
             dtype, jax.config.jax_compilation_cache_dir or '', stage]
  done = subprocess.run(command, capture_output=True, text=True, check=False,
                        env={**os.environ, 'JAX_PLATFORMS': jax.default_backend()})
  if done.returncode:
    raise RuntimeError(f'The restart benchmark failed: {done.stderr[-2000:]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def bench_train_step(quick: bool, load_config, variants=('default', 'paper'),
                     stages=STAGES, init_on_host=False, config_file=None) -> dict:
  """Every variant's bench_config, and its restart (with `config_file`, the file that
  load_config reads: the new process loads it again)."""
  peaks = {'float32': timing.matmul_peak(quick)}
  result = {'matmul_peak': peaks['float32']}
  if jax.default_backend() == 'gpu':  # the card's tensor-core ceiling, for reference
    peaks['bfloat16'] = result['matmul_peak_bfloat16'] = timing.matmul_peak(
        quick, jax.numpy.bfloat16)
  logging.info('matmul peak: %s', json.dumps(result))
  for variant in (['smoke'] if quick else variants):
    config = load_config(variant)
    dtype = compute_dtype(config).name
    if dtype not in peaks:  # MFU against the peak of the dtype the products run in
      peaks[dtype] = result[f'matmul_peak_{dtype}'] = timing.matmul_peak(quick, dtype)
    result[variant] = bench_config(config, peaks[dtype]['flops_per_second'], 2 if quick else 5,
                                   stages, init_on_host)
    if config_file and jax.config.jax_compilation_cache_dir:
      result[variant]['restart'] = restart = restart_seconds(config_file, variant, stages[0],
                                                             dtype)
      logging.info('%s restart with the cache warm: %s', variant, json.dumps(restart))
  measured = [result[v][s] for v in result if not v.startswith('matmul') for s in stages]
  result['check'] = {'passed': all(s['loss_finite'] and (s['flops_per_step'] or 0) > 0
                                   for s in measured),
                     'what': 'the loss stays finite over the timed steps; XLA counts FLOPs'}
  return result
