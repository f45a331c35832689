"""Trains the shape autoencoder on SynthRooms canonical shapes (`--mode=train_shape`).

Loss per batch (PAPER.md "Representation", issue 4):
  occupancy BCE on near-surface and uniform queries
  + surface_weight · (mixture samples → surface + surface → mixture samples), a two-sided
    Chamfer that keeps the Gaussians on the surface so their samples can stand in for it,
with optional SPAGHETTI-style extrinsic augmentation: for a share of the shapes
(`augment_probability`), one random similarity (rotation about y, scale 0.7–1.3,
translation ±0.3) moves the Gaussians, the queries and the surface together, so the decoder
must read the shape's placement from the Gaussians alone. Off by default: at the default
budget it cost 24 F-score points on held-out shapes (docs/shape_autoencoder_eval.md), and
the scene model places objects through their boxes, not by moving Gaussians.
"""
import functools
import time

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from scenediff_jax.geometry import gmm, nearest_sq_dist
from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder, abstract_params, make_model
from scenediff_jax.training import checkpoints, preemption, sharding
from scenediff_jax.training.metric_log import MetricLog


def random_similarity(key, batch_size):
  """Rotations about y [B, 3, 3], scales [B], translations [B, 3]."""
  k_angle, k_scale, k_shift = jax.random.split(key, 3)
  angle = jax.random.uniform(k_angle, (batch_size,), minval=-jnp.pi, maxval=jnp.pi)
  c, s, z, o = jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(angle), jnp.ones_like(angle)
  rotation = jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1),
                        jnp.stack([-s, z, c], -1)], -2)
  scale = jax.random.uniform(k_scale, (batch_size,), minval=0.7, maxval=1.3)
  shift = jax.random.uniform(k_shift, (batch_size, 3), minval=-0.3, maxval=0.3)
  return rotation, scale, shift


def move_points(points, rotation, scale, shift):
  """x ↦ s·R·x + t for points [B, N, 3]."""
  return scale[:, None, None] * jnp.einsum('bij,bnj->bni', rotation, points) + shift[:, None]


def occupancy_bce(logits, inside, balanced=False):
  """Mean BCE of logits [B, Q] against labels [B, Q]. `balanced`: each shape's inside and
  outside queries carry half of its weight each, so the few queries inside thin parts are
  not outvoted by the empty space around them."""
  bce = optax.sigmoid_binary_cross_entropy(logits, inside)
  if balanced:
    inside_share = jnp.clip(inside.mean(-1, keepdims=True), 1e-3, 1 - 1e-3)
    bce = bce * jnp.where(inside > 0.5, 0.5 / inside_share, 0.5 / (1 - inside_share))
  return bce.mean()


def loss_fn(params, model, batch, key, config):
  t = config.shape_training
  gaussians, intrinsics = model.apply(params, batch['surface'], method=ShapeAutoencoder.encode)
  queries, surface = batch['queries'], batch['surface']
  k_augment, k_sample = jax.random.split(key)
  if t.augment_probability > 0:
    rotation, scale, shift = random_similarity(k_augment, queries.shape[0])
    # Only a share of the shapes is moved: fully augmented batches learn much more slowly
    # (BCE 0.63 against 0.38 after 150 steps on the default config).
    moved = jax.random.bernoulli(jax.random.fold_in(k_augment, 1), t.augment_probability,
                                 (queries.shape[0],))
    rotation = jnp.where(moved[:, None, None], rotation, jnp.eye(3))
    scale = jnp.where(moved, scale, 1.0)
    shift = jnp.where(moved[:, None], shift, 0.0)
    gaussians = gmm.transform(gaussians, rotation, scale, shift)
    queries = move_points(queries, rotation, scale, shift)
    surface = move_points(surface, rotation, scale, shift)
  logits = model.apply(params, gaussians, intrinsics, queries, method=ShapeAutoencoder.occupancy)
  bce = occupancy_bce(logits, batch['inside'], t.balanced_bce)
  samples = gmm.sample(k_sample, gaussians, t.points_per_gaussian)
  samples = samples.reshape(samples.shape[0], -1, 3)
  to_surface = nearest_sq_dist(samples, surface).mean()
  to_samples = nearest_sq_dist(surface, samples).mean()
  loss = bce + t.surface_weight * (to_surface + to_samples)
  predicted = logits > 0
  inside = batch['inside'] > 0.5
  iou = jnp.sum(predicted & inside) / jnp.maximum(jnp.sum(predicted | inside), 1)
  return loss, {'loss': loss, 'bce': bce, 'samples_to_surface': to_surface,
                'surface_to_samples': to_samples, 'occupancy_iou': iou}


def create_state(config, model, example_batch, key):
  params = model.init(key, example_batch['surface'], example_batch['queries'])
  t = config.shape_training
  schedule = optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, min(100, t.steps // 10 + 1),
                                                t.steps, t.learning_rate * 0.05)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=t.weight_decay))
  return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


def make_train_step(model, config):
  @functools.partial(jax.jit, donate_argnums=0)
  def train_step(state, batch, key):
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, metrics), grads = grad_fn(state.params, model, batch, key, config)
    return state.apply_gradients(grads=grads), metrics
  return train_step


def train(config, workdir, shape_source):
  """Trains for config.shape_training.steps, resuming from the latest checkpoint."""
  from scenediff_jax.training import shape_data  # grain is only needed to train

  t = config.shape_training
  model = make_model(config)
  mesh = sharding.make_mesh()
  batches = shape_data.shape_batches(shape_source, t.batch_size, t.surface_points,
                                     t.occupancy_points, t.seed, t.near_surface_share)
  to_device = lambda b: jax.device_put(
      {k: b[k] for k in ('surface', 'queries', 'inside')}, sharding.batch_sharding(mesh))
  root = jax.random.key(t.seed)
  with jax.set_mesh(mesh):
    state = create_state(config, model, to_device(batches[0]), root)
    state = jax.device_put(state, sharding.replicated(mesh))
    checkpointer = checkpoints.Checkpointer(f'{workdir}/checkpoints/shape')
    if checkpointer.latest_step is not None:
      state = checkpointer.restore(state)
    train_step = make_train_step(model, config)
    start_step = int(state.step)
    log = MetricLog(workdir, 'shape_metrics.jsonl', tensorboard_prefix='shape',
                    start_step=start_step)
    progress = tqdm.tqdm(range(start_step, t.steps), initial=start_step, total=t.steps,
                         desc='train_shape', unit='step', disable=jax.process_index() != 0)
    history, tick = [], time.perf_counter()
    with preemption.PreemptionWatch() as watch:
      for step in progress:
        state, metrics = train_step(state, to_device(batches[step]), jax.random.fold_in(root, step))
        history.append(metrics)
        if (step + 1) % t.log_every == 0 or step + 1 == t.steps:
          mean = jax.tree.map(lambda *x: float(np.mean(x)), *history)
          mean['steps_per_second'] = len(history) / (time.perf_counter() - tick)
          log.write(step + 1, mean)
          progress.set_postfix(loss=f'{mean["loss"]:.4f}', iou=f'{mean["occupancy_iou"]:.3f}')
          history, tick = [], time.perf_counter()
        saved = (step + 1) % t.checkpoint_every == 0 or step + 1 == t.steps
        if saved:
          checkpointer.save(step + 1, state)
        if step + 1 < t.steps and watch.stop_here(checkpointer, step + 1, state, saved):
          break
    log.close()
    checkpointer.close()
  watch.raise_if_stopped(f'{workdir}/checkpoints/shape')
  logging.info('Shape autoencoder trained for %d steps; checkpoints in %s/checkpoints/shape',
               t.steps, workdir)
  return model, state.params


def restore(config, workdir, step=None):
  """(model, params) of the shape autoencoder checkpoint `step` (default: the latest) in the
  workdir, read only: the parameters alone, without the optimizer state.

  Raises:
    FileNotFoundError: no checkpoint, or not the one of `step`.
    checkpoints.CheckpointUnreadable: it cannot be read, or is of another config.
  """
  directory = f'{workdir}/checkpoints/shape'
  if checkpoints.latest_step(directory) is None:
    raise FileNotFoundError(f'No shape autoencoder checkpoint in {directory}; train first with '
                            '--mode=train.')
  checkpointer = checkpoints.Checkpointer(directory, read_only=True)
  try:
    if step is not None and step not in checkpointer.all_steps:
      raise FileNotFoundError(
          f'{directory} no longer holds step {step} of the shape autoencoder, which the scene '
          f'model was trained with (it holds {checkpointer.all_steps}); retrain the scene '
          'stages in a new --workdir.')
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            abstract_params(config))
    params = checkpointer.restore({'params': abstract}, step)['params']
  finally:
    checkpointer.close()
  return make_model(config), params
