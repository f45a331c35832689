"""How much of the joint stage's gradient is L_align's: `python -m
scenediff_jax.jobs.gradient_share --workdir=DIR` on a trained workdir prints, over training
batches at the latest scene checkpoint, the norm of λ·L_align's gradient relative to that of
the denoising losses (L_pose + L_shape) and the cosine between the two (medians and each
batch), and writes them to DIR/gradient_share.json.

Both gradients come from the same draw of timesteps, noise and dropped conditions (the same
key), so they are the two parts of one joint-stage step's gradient.
"""
import functools
import json
import os

from absl import app, flags
import jax
import ml_collections
import numpy as np
import optax

from scenediff_jax import diffusion
from scenediff_jax.inference import restore
from scenediff_jax.models import scene_model
from scenediff_jax.training import pipeline, scene_data, scene_trainer
from scenediff_jax.training import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained workdir (config.json, checkpoints).')
_BATCHES = flags.DEFINE_integer('batches', 8, 'Training batches to measure on.')


def measure(config, workdir, num_batches=8) -> dict:
  """{'ratio': [...], 'cosine': [...], 'median_ratio', 'median_cosine', 'step'}."""
  stages = pipeline.prepare(config, workdir, train_shapes=False)
  trained = restore.restore_params(workdir, config, stages.statistics, use_ema=False)
  model, schedule = scene_model.make_model(config), diffusion.make_schedule(config)
  grad = lambda align: jax.jit(jax.grad(lambda p, b, k: functools.partial(
      scene_trainer.loss_fn, model=model, schedule=schedule, statistics=stages.statistics,
      config=config, align=align)(p, b, k)[0]))
  denoising_grad, joint_grad = grad(False), grad(True)
  batches = scene_data.training_batches(stages.scenes.as_data_source('train'), stages.statistics,
                                        stages.latents, config)
  step = trained.step
  ratios, cosines = [], []
  for i in range(num_batches):
    batch = {k: np.asarray(v) for k, v in batches[step + i].items()}
    batch = {k: batch[k] for k in scene_trainer.MODEL_INPUTS}
    key = jax.random.fold_in(jax.random.key(config.training.seed), step + i)
    g_denoise = denoising_grad(trained.scene, batch, key)
    g_align = jax.tree.map(lambda a, b: a - b, joint_grad(trained.scene, batch, key), g_denoise)
    norm_d, norm_a = float(optax.tree.norm(g_denoise)), float(optax.tree.norm(g_align))
    dot = float(sum(np.vdot(a, b) for a, b in zip(jax.tree.leaves(g_denoise),
                                                  jax.tree.leaves(g_align))))
    ratios.append(norm_a / norm_d)
    cosines.append(dot / max(norm_a * norm_d, 1e-30))
  return {'step': step, 'ratio': ratios, 'cosine': cosines,
          'median_ratio': float(np.median(ratios)), 'median_cosine': float(np.median(cosines))}


def main(argv):
  del argv
  workdir = _WORKDIR.value
  saved = workdir_lib.read_config(workdir)
  if saved is None:
    raise app.UsageError(f'{workdir} has no config.json: give a trained workdir.')
  result = measure(ml_collections.ConfigDict(saved), workdir, _BATCHES.value)
  with open(os.path.join(workdir, 'gradient_share.json'), 'w') as f:
    json.dump(result, f, indent=2)
  print(f'step {result["step"]}: |grad λ·L_align| / |grad L_pose + L_shape| = '
        f'{result["median_ratio"]:.2f} (median of {len(result["ratio"])}), cosine '
        f'{result["median_cosine"]:+.2f}')


if __name__ == '__main__':
  flags.mark_flag_as_required('workdir')
  app.run(main)
