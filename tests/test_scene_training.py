"""The scene diffusion's input pipeline, train step, sampler and main job end to end."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from scenediff_jax import diffusion
from scenediff_jax.evaluation import box_iou_3d
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import pose as pose_lib
from scenediff_jax.geometry.normalization import ShapeLatents
from scenediff_jax.inference import sampling
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import scene_data, scene_trainer, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G, D = 4, 8



def _sampler(model, schedule, config, unconditional=False):
  """sample(params, batch, key) → normalised x₀ with the config's DDIM steps and guidance."""
  sample = sampling.scene_sampler(model, schedule, config, unconditional=unconditional)
  steps = diffusion.ddim_timesteps(schedule.num_timesteps, config.diffusion.sampling_steps)
  return jax.jit(lambda params, batch, key: sample(params, batch, key, steps,
                                                  config.diffusion.guidance_scale))

def tiny_config():
  c = ml_collections.ConfigDict()
  c.max_objects = 16
  c.image_encoder = dict(resnet_depth=18, base_width=8, num_stages=2, roi_size=4,
                         roi_channels=8, feature_width=8, condition_size=16)
  c.denoiser = dict(pose_widths=(16, 16), num_heads=2, head_dim=8, shape_width=16,
                    shape_heads=2, gaussian_layers=(1, 1), intrinsic_layers=(1, 1),
                    time_frequencies=16)
  c.shape_model = dict(num_parts=G, intrinsic_size=D)
  c.diffusion = dict(num_timesteps=1000, beta_start=1e-4, beta_end=0.02, sampling_steps=5,
                     eta=0.0, guidance_scale=1.0, condition_drop=0.1, clip_x0=4.0)
  c.training = dict(batch_size=2, learning_rate=3e-3, weight_decay=0.0, grad_clip=1.0,
                    warmup_steps=1, diffusion_steps=40, joint_steps=0, align_weight=0.01,
                    ema_decay=0.9, depth_points=16, align_points_per_gaussian=2, align_clip=4.0,
                    seed=0)
  return c


@pytest.fixture(scope='module')
def prepared(scenes):
  """Tiny latents for the fixture's shapes and statistics from its training scenes."""
  ids = np.unique(np.concatenate([s['objects']['shape_id'] for s in scenes]))
  rng = np.random.default_rng(0)
  latents = ShapeLatents(ids.astype(np.int32),
                                    rng.normal(size=(len(ids), G, 16)).astype(np.float32),
                                    rng.normal(size=(len(ids), G, D)).astype(np.float32),
                                    np.ones(len(ids), bool))
  statistics = scene_data.compute_scene_statistics(scenes[:16], 16, latents)
  return latents, statistics


def test_prepared_scene_round_trips_to_the_records_boxes(scenes, prepared):
  latents, statistics = prepared
  record = scenes[3]
  example = scene_data.prepare_scene(record, statistics, latents, 16, 32,
                                     np.random.default_rng(0))
  n = len(record['objects']['class'])
  assert example['mask'].sum() == n and not example['mask'][n:].any()
  poses = statistics.pose.denormalize(example['pose'][:n].astype(np.float64))
  size = scene_data.image_size(record)
  recovered = pose_lib.pose_to_box(poses, record['objects']['bbox2d'], record['K'],
                                   record['world_to_cam'], size)
  within = np.all(np.abs(example['pose'][:n]) < scene_data.POSE_CLIP, -1)  # not clipped
  np.testing.assert_allclose(recovered[within], record['objects']['box3d'][within], atol=1e-3)
  layout = statistics.layout.denormalize(example['layout'].astype(np.float64))
  assert abs(layout[6]) <= np.pi / 4 + 1e-6  # one representation of the room box
  np.testing.assert_allclose(box_iou_3d(layout[None], record['layout'][None].astype(np.float64)),
                             1.0, atol=1e-4)
  # Shape latents are the table's rows of each object's shape id, normalised.
  rows = latents.rows(record['objects']['shape_id'])
  np.testing.assert_allclose(statistics.gaussians.denormalize(example['gaussians'][:n]),
                             latents.gaussians[rows], atol=1e-4)
  # Depth points lie on (in) their own object's box, and every visible object has some.
  for k in range(n):
    assert example['depth_mask'][k].all()
    inside = boxes_lib.points_in_box(example['depth_points'][k], record['objects']['box3d'][k],
                                     inflate=0.02)
    assert inside.mean() > 0.99


def test_scenes_with_too_many_objects_keep_the_most_visible(scenes, prepared):
  latents, statistics = prepared
  record = max(scenes, key=lambda s: len(s['objects']['class']))
  n = len(record['objects']['class'])
  keep = n - 2
  example = scene_data.prepare_scene(record, statistics, latents, keep, 8,
                                     np.random.default_rng(0))
  visible = record['objects']['visible_pixels']
  expected = np.sort(np.argsort(-visible, kind='stable')[:keep])
  np.testing.assert_array_equal(example['class'], record['objects']['class'][expected])
  assert example['mask'].all()


def _batch(scenes, prepared, indices, config):
  latents, statistics = prepared
  examples = [scene_data.prepare_scene(scenes[i], statistics, latents, config.max_objects,
                                       config.training.depth_points, np.random.default_rng(i))
              for i in indices]
  return {k: np.stack([e[k] for e in examples]) for k in scene_trainer.MODEL_INPUTS}


def test_train_step_compiles_once_and_overfits_a_tiny_batch(scenes, prepared):
  config = tiny_config()
  model = make_model(config)
  mesh = sharding.make_mesh()
  _, statistics = prepared
  batch = _batch(scenes, prepared, [0, 1], config)
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(batch, mesh)
    state = scene_trainer.initial_state(config, model, batch, mesh)
    step = scene_trainer.make_train_step(model, diffusion.make_schedule(config), statistics,
                                         config)
    losses = []
    for _ in range(40):
      # One fixed key: the same timesteps and noise every step, so the loss must fall.
      state, metrics = step(state, batch, jax.random.key(7), False)
      losses.append(float(metrics['loss']))
    assert step._cache_size() == 1  # no retracing across steps
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    state, metrics = step(state, batch, jax.random.key(7), True)  # the joint stage
    assert step._cache_size() == 2 and float(metrics['l_align']) > 0
    assert int(state.step) == 41
    # The EMA follows the parameters but lags behind them.
    leaf = lambda tree: jax.tree.leaves(tree)[0]
    assert not np.allclose(leaf(state.ema_params), leaf(state.params))


def test_sampler_is_deterministic_and_samples_unconditionally(scenes, prepared):
  config = tiny_config()
  model = make_model(config)
  batch = _batch(scenes, prepared, [2, 3], config)
  state = scene_trainer.create_state(config, model, batch, jax.random.key(0))
  # Perturb the zero-initialised output heads so that samples depend on the inputs.
  params = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                        state.params)
  schedule = diffusion.make_schedule(config)
  sample = _sampler(model, schedule, config)
  a, b = sample(params, batch, jax.random.key(1)), sample(params, batch, jax.random.key(1))
  c = sample(params, batch, jax.random.key(2))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a[k], c[k])
  free = _sampler(model, schedule, config, unconditional=True)(
      params, batch, jax.random.key(1))
  assert not np.allclose(free['pose'], a['pose'])  # the image does matter
  _, statistics = prepared
  decoded = sampling.decode(a, batch, statistics)
  assert decoded['boxes'].shape == (2, 16, 7) and np.all(decoded['boxes'][..., 3:6] > 0)
  assert np.all(np.abs(decoded['boxes'][..., 6]) <= np.pi)


@pytest.mark.slow
def test_main_trains_checkpoints_resumes_and_evaluates(tmp_path):
  work = tmp_path / 'work'
  env = dict(os.environ)  # with conftest's shared compilation cache
  args = [sys.executable, '-m', 'scenediff_jax.main', '--config=configs/synthetic.py:smoke',
          f'--config.data_dir={tmp_path / "tfds"}', f'--workdir={work}']
  run = lambda *extra: subprocess.run(args + list(extra), cwd=REPO, capture_output=True,
                                      text=True, timeout=900, env=env)
  logged_steps = lambda: [json.loads(l)['step'] for l in
                          (work / 'logs' / 'metrics.jsonl').read_text().splitlines()]
  checkpoints = lambda: sorted(int(s) for s in os.listdir(work / 'checkpoints' / 'scene'))

  first = run('--mode=train', '--config.training.joint_steps=0')  # stops after 20 steps
  assert first.returncode == 0, first.stderr[-3000:]
  assert logged_steps() == [5, 10, 15, 20] and checkpoints()[-1] == 20
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(work / 'logs'))

  # A diverging run stops with a clear message and leaves the good checkpoint alone.
  diverged = run('--mode=train', '--config.training.learning_rate=1e30')
  assert diverged.returncode != 0
  assert 'last good checkpoint is step 20' in diverged.stderr
  assert checkpoints()[-1] == 20

  second = run('--mode=train')  # resumes at 20 and adds the joint stage with L_align
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'steps 20 → 26' in second.stderr
  assert logged_steps()[-2:] == [25, 26] and checkpoints()[-1] == 26
  log = [json.loads(l) for l in (work / 'logs' / 'metrics.jsonl').read_text().splitlines()]
  assert log[-1]['l_align'] > 0 and log[3]['l_align'] == 0

  third = run('--mode=eval')
  assert third.returncode == 0, third.stderr[-3000:]
  metrics = json.loads((work / 'eval' / 'metrics.json').read_text())
  for key in ('ap3d_15', 'iou3d_mean', 'layout_iou', 'l_align', 'shape_cd', 'shape_fscore',
              'per_class', 'num_scenes', 'config', 'step'):
    assert key in metrics, key
  assert metrics['num_scenes'] == 8 and metrics['step'] == 26
  assert metrics['l_align'] is not None
  # Every meshed object is scored: one whose field has no surface (a 26-step model's often
  # has none) as an empty mesh with F-score 0, not left out.
  assert metrics['num_meshed_objects'] == 4 and metrics['shape_fscore'] is not None
  assert 'trivial baseline (class means)' in metrics['baselines']
  report = (work / 'eval' / 'report.md').read_text()
  assert 'trivial baseline' in report
  assert len(os.listdir(work / 'eval' / 'previews')) == 2


def test_regression_ablation_regresses_x0_in_one_forward_pass(scenes, prepared):
  config = tiny_config()
  config.method = 'regression'
  config.diffusion.condition_drop = 0.0  # as in the variant: no scene sees the null condition
  model = make_model(config)
  _, statistics = prepared
  batch = _batch(scenes, prepared, [0, 1], config)
  state = scene_trainer.create_state(config, model, batch, jax.random.key(0))
  schedule = diffusion.make_schedule(config)
  loss = jax.jit(lambda params, key: scene_trainer.loss_fn(
      params, batch, key, model=model, schedule=schedule, statistics=statistics, config=config,
      align=False)[1])
  # The output heads start at zero, so the first loss is the targets' mean square: x₀'s
  # exactly, whatever the key (a noise target would give another, random, value).
  mask, has = batch['mask'], batch['mask'] & batch['has_shape']
  layout_mask = batch['layout_mask'].astype(np.float64)
  pose_sq = (np.sum(np.square(batch['pose']) * mask[..., None]) +
             np.sum(np.square(batch['layout']) * layout_mask[:, None]))
  expected_pose = pose_sq / (7 * (mask.sum() + layout_mask.sum()))
  expected_shape = (np.mean(np.square(batch['gaussians'][has])) +
                    np.mean(np.square(batch['intrinsics'][has])))
  for key in (jax.random.key(1), jax.random.key(2)):
    metrics = loss(state.params, key)
    np.testing.assert_allclose(metrics['l_pose'], expected_pose, rtol=1e-5)
    np.testing.assert_allclose(metrics['l_shape'], expected_shape, rtol=1e-5)

  # Sampling is one deterministic forward pass, whatever the key; training fits that very
  # pass to x₀: the loss is the squared error of the sampler's output (nothing is clipped).
  params = jax.tree.map(lambda p: p + 0.05 * jnp.sin(jnp.arange(p.size).reshape(p.shape)),
                        state.params)
  sample = _sampler(model, schedule, config)
  a, b = sample(params, batch, jax.random.key(1)), sample(params, batch, jax.random.key(2))
  for k in scene_trainer.DIFFUSED:
    np.testing.assert_array_equal(a[k], b[k])
    assert np.abs(a[k]).max() < config.diffusion.clip_x0
  sq = lambda k: np.square(np.asarray(a[k], np.float64) - batch[k])
  expected_pose = (np.sum(sq('pose') * mask[..., None]) + np.sum(
      sq('layout') * layout_mask[:, None])) / (7 * (mask.sum() + layout_mask.sum()))
  expected_shape = np.mean(sq('gaussians')[has]) + np.mean(sq('intrinsics')[has])
  metrics = loss(params, jax.random.key(3))
  assert abs(expected_pose - np.mean(np.square(batch['pose'][mask]))) > 0.01  # not the init's
  np.testing.assert_allclose(metrics['l_pose'], expected_pose, rtol=1e-4)
  np.testing.assert_allclose(metrics['l_shape'], expected_shape, rtol=1e-4)
