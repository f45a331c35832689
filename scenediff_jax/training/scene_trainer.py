"""Trains the image-conditioned scene diffusion (`--mode=train`, after the shape autoencoder).

Stages by step: `diffusion_steps` of L_pose + L_shape, then `joint_steps` more with λ·L_align
added (PAPER.md "Training"). One jit-compiled step per stage over the config's mesh
(training/sharding.py): the batch is sharded along 'data', the state replicated or, with a
'model' axis, its large arrays sharded; the old state's buffers are donated. The state keeps an
EMA of the parameters, which evaluation samples with. Checkpoints (orbax) go to
workdir/checkpoints/scene every `checkpoint_every` steps and at the end; a run resumes from
the latest one and re-reads batch `step` exactly, so a resumed run sees the same data.
"""
import functools
import time
from typing import Any

from absl import logging
from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from scenediff_jax import compiler, diffusion, executable_cache
from scenediff_jax.geometry.normalization import SceneStatistics, ShapeLatents
from scenediff_jax.models import resnet_weights
from scenediff_jax.models.scene_model import SceneModel, make_model
from scenediff_jax.training import (
  checkpoints,
  config_checks,
  init_prng,
  losses,
  optimizer,
  preemption,
  scene_data,
  sharding,
)
from scenediff_jax.training.metric_log import MetricLog

DIFFUSED = ('layout', 'pose', 'gaussians', 'intrinsics')
MODEL_INPUTS = ('image', 'K', 'world_to_cam', 'class', 'bbox2d', 'mask', 'layout', 'layout_mask',
                'pose', 'gaussians', 'intrinsics', 'has_shape', 'depth_points', 'depth_mask')


class TrainState(train_state.TrainState):
  ema_params: Any = None


def create_state(config, model, example_batch, key, packed_moments=True) -> TrainState:
  """Parameters drawn from `key`, their EMA, and AdamW's state (optimizer.make_optimizer;
  `packed_moments=False`: the layout of checkpoints saved before it packed)."""
  b = example_batch
  t = config.training
  timesteps = jnp.zeros(b['image'].shape[:1], jnp.int32)
  noisy = {k: b[k] for k in DIFFUSED}
  # init under jit: compiled once, it is several times faster than op-by-op on a CPU. (Plain
  # jax.jit: restore_state traces this function, and compiler options need a top-level jit.)
  # A restart loads the executable without tracing model.init (executable_cache).
  init = executable_cache.CachedProgram(jax.jit(model.init), 'scene_init', depends_on=model)
  params = init(key, b, noisy, timesteps)
  if t.get('backbone_weights'):  # ImageNet weights of a torchvision ResNet
    params = resnet_weights.load_into(params, t.backbone_weights, config.image_encoder)
  tx = optimizer.make_optimizer(config, packed_moments)
  if jax.process_count() > 1:  # host zeros and device_put copies would be one process's arrays
    return jax.jit(lambda p: TrainState.create(apply_fn=model.apply, params=p, tx=tx,
                                               ema_params=jax.tree.map(jnp.copy, p)))(params)
  # One process: the EMA starts as a copy that device_put makes without compiling anything (a
  # jitted copy of the paper's 608 arrays compiles for 5 s), the optimizer's moments as host
  # zeros.
  return TrainState(step=jnp.zeros((), jnp.int32), apply_fn=model.apply, params=params, tx=tx,
                    opt_state=optimizer.zero_optimizer_state(tx, params),
                    ema_params=jax.device_put(params, may_alias=False))


def loss_fn(params, batch, key, *, model, schedule, statistics, config, align):
  t, d = config.training, config.diffusion
  k_time, k_noise, k_drop, k_align = jax.random.split(key, 4)
  batch_size = batch['image'].shape[0]
  x0 = {k: batch[k] for k in DIFFUSED}
  regression = diffusion.is_regression(config)
  prediction = diffusion.prediction_of(config)
  if regression:  # the ablation: one fixed input, the target is x₀ itself
    x_t, timesteps = diffusion.regression_input(x0, schedule.num_timesteps)
    target, weights = x0, jnp.ones((batch_size,), jnp.float32)
  else:
    timesteps = schedule.sample_timesteps(k_time, batch_size)
    eps = diffusion.tree_normal(k_noise, x0)
    x_t = schedule.add_noise(x0, timesteps, eps)
    target = diffusion.target(schedule, prediction, x0, eps, timesteps)
    weights = diffusion.loss_weights(schedule, timesteps, prediction,
                                     d.get('loss_weighting', 'none'), d.get('snr_gamma', 5.0))
  drop = diffusion.drop_condition_mask(k_drop, batch_size, d.condition_drop)
  y = model.apply(params, batch, drop, method=SceneModel.condition)
  output = model.apply(params, x_t, timesteps, y, batch['mask'], method=SceneModel.denoise)
  l_pose, l_shape = losses.denoising_losses(output, target, batch, weights)
  l_align = jnp.zeros(())
  if align:
    # x̂₀ is clipped to the normalised data range: at large t an ε-prediction's x̂₀ is mostly
    # noise amplified by 1/√ᾱ_t, and unclipped it would put points hundreds of metres away.
    x0_hat = output if regression else diffusion.predict_x0(schedule, prediction, x_t,
                                                            timesteps, output)
    x0_hat = jax.tree.map(lambda x: jnp.clip(x, -t.align_clip, t.align_clip), x0_hat)
    height, width = batch['image'].shape[1:3]
    l_align = losses.alignment_loss(k_align, x0_hat, batch, statistics,
                                    jnp.array([width, height], jnp.float32),
                                    t.align_points_per_gaussian,
                                    align_weights(schedule, timesteps, config))
  loss = l_pose + l_shape + (t.align_weight * l_align if align else 0.0)
  return loss, {'loss': loss, 'l_pose': l_pose, 'l_shape': l_shape, 'l_align': l_align}


def align_weights(schedule, timesteps, config):
  """Per-scene weights of L_align (training.align_weighting): 'uniform' (the paper's, and the
  default of workdirs trained before it was a choice) or 'signal' (ᾱ_t, diffusion.weighting)."""
  weighting = config.training.get('align_weighting', 'uniform')
  if weighting == 'uniform' or diffusion.is_regression(config):
    return jnp.ones(timesteps.shape, jnp.float32)
  if weighting == 'signal':
    return diffusion.signal_fraction(schedule, timesteps)
  raise ValueError(f"config.training.align_weighting must be 'uniform' or 'signal', not "
                   f'{weighting!r}.')


def make_train_step(model, schedule, statistics, config, mesh=None):
  """train_step(state, batch, key, align) → (state, metrics); `align` is static (one
  compilation per stage). With a mesh, the new state keeps the state's sharding rules. A
  restart loads the step's executables without tracing them (executable_cache; keyed by
  everything the step closes over)."""
  decay = config.training.ema_decay

  @functools.partial(compiler.jit, donate_argnums=0, static_argnums=3)
  def train_step(state, batch, key, align):
    grad_fn = jax.value_and_grad(functools.partial(
        loss_fn, model=model, schedule=schedule, statistics=statistics, config=config,
        align=align), has_aux=True)
    (_, metrics), grads = grad_fn(state.params, batch, key)
    # Over the arrays the optimizer packs anyway (XLA packs them once): one reduction for
    # the small arrays instead of one each.
    metrics['grad_norm'] = optax.tree.norm(optimizer.pack(grads))
    state = state.apply_gradients(grads=grads)
    # EMA with a warm-up, so early evaluations are not dominated by the random init.
    rate = jnp.minimum(decay, (1.0 + state.step) / (10.0 + state.step))
    ema = jax.tree.map(lambda e, p: rate * e + (1 - rate) * p, state.ema_params, state.params)
    state = state.replace(ema_params=ema)
    if mesh is not None:  # the same sharding in and out: donation reuses the buffers
      state = jax.lax.with_sharding_constraint(state, sharding.state_sharding(mesh, state))
    return state, metrics

  return executable_cache.CachedProgram(train_step, 'scene_train_step', static_argnums=(3,),
                                        depends_on=(model, schedule, statistics, config, mesh))


def device_batch(batch, mesh):
  """This process's rows of a batch → global arrays sharded along 'data'."""
  batch_sharding = sharding.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(batch_sharding, np.asarray(batch[k]))
          for k in MODEL_INPUTS}


def _init_key(config):
  return init_prng.init_key(config.training.seed)  # compiles init twice as fast as 'rbg'


def initial_state(config, model, example_batch, mesh):
  """A fresh state, placed on the mesh by the sharding rules."""
  state = create_state(config, model, example_batch, _init_key(config))
  return jax.device_put(state, sharding.state_sharding(mesh, state))


def abstract_state(config, model, example_batch, mesh, packed_moments=True):
  """create_state's shapes, dtypes and (by the sharding rules) shardings, traced by
  jax.eval_shape: nothing is initialised or compiled."""
  abstract = jax.eval_shape(functools.partial(create_state, config, model,
                                              packed_moments=packed_moments),
                            example_batch, _init_key(config))
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                      sharding.state_sharding(mesh, abstract))


def restore_state(checkpointer, config, model, example_batch, mesh):
  """The latest checkpoint, restored onto the mesh by the sharding rules. A checkpoint that
  holds AdamW's moments per array (saved before the optimizer packed the small arrays) is
  read in that layout and its moments packed; the next save writes the packed layout."""
  abstract = abstract_state(config, model, example_batch, mesh)
  saved = checkpointer.saved_tree()
  if saved is None or (len(jax.tree.leaves(saved.get('opt_state')))
                       == len(jax.tree.leaves(abstract.opt_state))):
    return checkpointer.restore(abstract)
  logging.info("The checkpoint holds AdamW's moments per array; packing the small ones.")
  per_array = abstract_state(config, model, example_batch, mesh, packed_moments=False)
  state = checkpointer.restore(per_array)
  moments = optimizer.packed_moments_of(state.opt_state)
  if jax.tree.structure(moments) != jax.tree.structure(abstract.opt_state):
    raise checkpoints.CheckpointMismatch(
        f'Checkpoint {checkpointer.latest_step} in {checkpointer.directory} holds an optimizer '
        'state of another kind than this config makes: it was trained with another config.')
  return state.replace(tx=abstract.tx, opt_state=jax.device_put(
      moments, jax.tree.map(lambda x: x.sharding, abstract.opt_state)))


def train(config, workdir, source, statistics: SceneStatistics,
          latents: ShapeLatents):
  """Runs (or resumes) the scene stages; returns (model, final state)."""
  t = config.training
  total = t.diffusion_steps + t.joint_steps
  model = make_model(config)
  schedule = diffusion.make_schedule(config)
  mesh = sharding.make_mesh(config.get('mesh', sharding.DATA_PARALLEL))
  config_checks.check_devices(config, jax.device_count(), mesh.shape['data'])
  batches = scene_data.training_batches(source, statistics, latents, config)
  root = jax.random.key(t.seed)
  with jax.set_mesh(mesh):
    example = device_batch(batches[0], mesh)
    checkpointer = checkpoints.Checkpointer(f'{workdir}/checkpoints/scene', t.keep_checkpoints)
    if checkpointer.latest_step is None:
      state = initial_state(config, model, example, mesh)
    else:
      state = restore_state(checkpointer, config, model, example, mesh)
    start = int(state.step)
    if start >= total:
      logging.info('Scene diffusion already trained (%d steps).', start)
      checkpointer.close()
      return model, state
    logging.info('Scene diffusion: %s parameters; steps %d → %d (L_align from step %d).',
                 f'{sum(x.size for x in jax.tree.leaves(state.params)):,}', start, total,
                 t.diffusion_steps)
    train_step = make_train_step(model, schedule, statistics, config, mesh)
    log = MetricLog(workdir, 'metrics.jsonl', tensorboard_prefix='scene', start_step=start)
    progress = tqdm.tqdm(range(start, total), initial=start, total=total, desc='train',
                         unit='step', disable=jax.process_index() != 0)
    history, tick, last_saved = [], time.perf_counter(), checkpointer.latest_step
    with preemption.PreemptionWatch() as watch:
      for step, batch in zip(progress, scene_data.prefetched(batches, start)):
        align = step >= t.diffusion_steps
        state, metrics = train_step(state, device_batch(batch, mesh),
                                    jax.random.fold_in(root, step), align)
        history.append(metrics)
        done = step + 1
        if done % t.log_every == 0 or done == total or done == t.diffusion_steps:
          mean = jax.tree.map(lambda *x: float(np.mean(x)), *history)
          mean['steps_per_second'] = len(history) / (time.perf_counter() - tick)
          try:
            log.write(done, mean)
          except FloatingPointError as error:
            raise FloatingPointError(
                f'Training diverged before step {done} ({error}). The last good checkpoint is '
                f'step {last_saved} in {workdir}/checkpoints/scene; lower '
                f'--config.training.learning_rate and rerun to resume from it.') from None
          progress.set_postfix(loss=f'{mean["loss"]:.4f}',
                               steps_s=f'{mean["steps_per_second"]:.2f}')
          history, tick = [], time.perf_counter()
        # Also at the end of the diffusion stage: the ablation (jobs/ablation.py) starts
        # its no-joint variant from there instead of training the same steps again.
        if done % t.checkpoint_every == 0 or done in (t.diffusion_steps, total):
          if not np.isfinite(float(metrics['loss'])):  # never overwrite good with bad
            raise FloatingPointError(f'Non-finite loss at step {done}; the last good checkpoint '
                                     f'is step {last_saved} in {workdir}/checkpoints/scene.')
          checkpointer.save(done, state)
          last_saved = done
        if done < total and watch.stop_here(checkpointer, done, state, last_saved == done):
          break
    log.close()
    checkpointer.close()
  watch.raise_if_stopped(f'{workdir}/checkpoints/scene')
  logging.info('Scene diffusion trained for %d steps; checkpoints in %s/checkpoints/scene',
               total, workdir)
  return model, state
