"""Entry point: `python -m scenediff_jax.main --config=configs/synthetic.py --workdir=DIR`.

Modes:
  train_and_eval  (default) train, then eval
  train         every stage: build the data if missing, the shape autoencoder, then the scene
                diffusion and the joint fine-tuning with L_align, resuming from DIR/checkpoints
  eval          sample the config's eval split with the latest (EMA) checkpoint and write
                DIR/eval/{metrics.json, report.md, previews/}
  build_data    build the config's datasets (scenes and shapes) if missing, then write a
                contact sheet of the scenes
  preview_data  write a contact sheet (DIR/previews/data.png) of scenes of the dataset,
                building only the scenes if they are missing
  train_shape   train the shape autoencoder on the dataset's canonical shapes (resuming
                from DIR/checkpoints/shape), then evaluate it on held-out shapes
                (DIR/eval_shape/)
  ablate        the paper's ablation (Table 2) and a partial-shape experiment: trains and
                evaluates the config's variants with config.ablation's budget and writes
                DIR/ablation.md (training/ablation.py)
  export        write the trained model as an inference bundle in DIR/export/ (jax.export
                functions for cpu, cuda and tpu, parameters, config, statistics and a
                loader that needs only jax and numpy); see scenediff_jax/inference/bundle.py
"""
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scenediff_jax import cli, data_preview

DATA_MISSING_STATUS = 2  # like a usage error: the user has to put files in place first
MODES = ('train_and_eval', 'train', 'eval', 'build_data', 'preview_data', 'train_shape', 'ablate',
         'export')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/synthetic.py or configs/synthetic.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the config, logs and outputs.')
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', MODES, 'What to do.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_libraries()
  run(_CONFIG.value, _WORKDIR.value, _MODE.value)


def run(config, workdir, mode):
  """The main job in `mode` (see the module docstring) for a config and a workdir."""
  if mode not in ('export',):
    from data_pipelines import registry
    try:  # before the workdir is touched: a missing dataset leaves nothing behind
      registry.check_available(config, shapes=mode not in ('preview_data',))
    except registry.DataMissing as missing:
      logging.error('%s', missing)
      sys.exit(DATA_MISSING_STATUS)
  lead = True
  if mode in ('train', 'eval', 'train_and_eval', 'train_shape', 'ablate'):
    from scenediff_jax.training import distributed  # jax loads only for these modes
    distributed.initialize()
    lead = distributed.is_lead()
  os.makedirs(workdir, exist_ok=True)
  if lead:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.info('Config %s, workdir %s, mode %s.', config.name, workdir, mode)
  if mode in ('train', 'eval', 'train_and_eval'):
    from scenediff_jax.training import pipeline, preemption
    try:
      stages = pipeline.train(config, workdir) if mode != 'eval' else None
      if mode != 'train':
        pipeline.evaluate(config, workdir, stages)
    except preemption.Preempted as stop:  # the checkpoint is written: retry later
      logging.warning('%s', stop)
      sys.exit(preemption.EXIT_STATUS)
    except (FloatingPointError, FileNotFoundError) as error:  # say what to do, not a traceback
      logging.error('%s', error)
      sys.exit(1)
    return
  if mode == 'ablate':
    from scenediff_jax.training import ablation, preemption
    try:
      ablation.run(config, workdir)
    except preemption.Preempted as stop:  # finished variants are kept: rerun to go on
      logging.warning('%s', stop)
      sys.exit(preemption.EXIT_STATUS)
    return
  if mode == 'export':
    from scenediff_jax.inference import export, trained_model
    try:
      export.export_bundle(workdir)
    except (FileNotFoundError, trained_model.ModelError) as error:
      logging.error('%s', error)
      sys.exit(1)
    return
  if mode == 'train_shape':
    from scenediff_jax.training import preemption, shape_trainer
    try:
      shape_trainer.train_and_evaluate(config, workdir)
    except preemption.Preempted as stop:
      logging.warning('%s', stop)
      sys.exit(preemption.EXIT_STATUS)
    return
  builder = data_preview.build(config) if mode == 'build_data' else None
  data_preview.preview(config, workdir, builder)


if __name__ == '__main__':
  app.run(main)
