"""Entry point: `python -m scenediff_jax.main --config=configs/synthetic.py --workdir=DIR`.

Modes:
  train_and_eval  (default) train, then eval
  train         every stage: build the data if missing, the shape autoencoder, then the scene
                diffusion and the joint fine-tuning with L_align, resuming from DIR/checkpoints
  eval          sample the config's eval split with the latest (EMA) checkpoint and write
                DIR/eval/{metrics.json, report.md, predictions.npz, previews/}
  build_data    build the config's datasets (scenes and shapes) if missing, then write a
                contact sheet of the scenes
  preview_data  write a contact sheet (DIR/previews/data.png) of scenes of the dataset,
                building only the scenes if they are missing
  train_shape   train the shape autoencoder on the dataset's canonical shapes (resuming
                from DIR/checkpoints/shape), then evaluate it on held-out shapes
                (DIR/eval_shape/)
  ablate        the paper's ablation (Table 2) and a partial-shape experiment: trains and
                evaluates the config's variants with config.ablation's budget and writes
                DIR/ablation.md (jobs/ablation.py)
  export        write the trained model as an inference bundle in DIR/export/ (jax.export
                functions for cpu, cuda and tpu, parameters, config, statistics and a
                loader that needs only jax and numpy); see scenediff_jax/inference/bundle.py
"""
from collections.abc import Callable
import contextlib
import dataclasses
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scenediff_jax import cli, data_preview

PROGRAM = 'main'
DATA_MISSING_STATUS = 2  # like a usage error: the user has to put files in place first


# What each mode runs. All jobs are imported when they run: jax loads only for the modes
# that need it, and a data mode starts without it.
def _train(config, workdir):
  from scenediff_jax.training import pipeline
  pipeline.train(config, workdir)


def _eval(config, workdir, stages=None):
  from scenediff_jax.jobs import scene_eval
  scene_eval.evaluate(config, workdir, stages)


def _train_and_eval(config, workdir):
  from scenediff_jax.training import pipeline
  _eval(config, workdir, pipeline.train(config, workdir))


def _train_shape(config, workdir):
  from scenediff_jax.jobs import shape_eval
  shape_eval.train_and_evaluate(config, workdir)


def _ablate(config, workdir):
  from scenediff_jax.jobs import ablation
  ablation.run(config, workdir)  # finished variants are kept: rerun to go on


def _export(config, workdir):
  del config  # the bundle is of the workdir's own config.json
  from scenediff_jax.inference import export
  export.export_bundle(workdir)


def _build_data(config, workdir):
  data_preview.preview(config, workdir, data_preview.build(config))


def _preview_data(config, workdir):
  data_preview.preview(config, workdir)


@dataclasses.dataclass(frozen=True)
class Mode:
  """A mode's job and what is checked before it starts."""
  run: Callable  # (config, workdir) → None
  # 'train': holds the workdir lock and checks the devices; 'read': needs a trained workdir
  # and changes nothing in it; 'data': only builds or shows the datasets.
  kind: str
  data: str = 'all'  # the datasets that must be available first: 'all', 'scenes' or 'none'
  scores_split: bool = False  # config.eval.split must exist
  resumes: bool = False  # must not train the shape stage on under trained scene checkpoints
  multi_process: bool = False  # joins the (multi-process) JAX runtime


MODES = {
    'train_and_eval': Mode(_train_and_eval, 'train', scores_split=True, resumes=True,
                           multi_process=True),
    'train': Mode(_train, 'train', resumes=True, multi_process=True),
    'eval': Mode(_eval, 'read', scores_split=True, multi_process=True),
    'build_data': Mode(_build_data, 'data'),
    'preview_data': Mode(_preview_data, 'data', data='scenes'),
    'train_shape': Mode(_train_shape, 'train', resumes=True, multi_process=True),
    'ablate': Mode(_ablate, 'train', multi_process=True),
    'export': Mode(_export, 'read', data='none'),
}

_CONFIG = config_flags.DEFINE_config_file(
    'config', None,
    'Experiment config file, e.g. configs/synthetic.py or configs/synthetic.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the config, logs and outputs.')
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', list(MODES), 'What to do.')


def parse_flags(argv):
  """absl's flag parsing, with a bad --config (unknown variant, misspelt field, a value of the
  wrong type) ending in one line and exit status 2 instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    line, flag = cli.last_line(error), re.match(r'flag (--\S+?): ', str(error))
    cli.fail(PROGRAM, line if line.startswith('flag') or not flag else f'{flag.group(1)}: {line}')
  except OSError as error:  # a --config file that is not there (with overrides)
    cli.fail(PROGRAM, f'--config: {cli.last_line(error)}')
  except (AttributeError, KeyError, TypeError, ValueError) as error:  # from config overrides
    missing = (re.findall(r'\w+', str(error)) or [''])[0]  # the message starts with the name
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    field = next((a for a in reversed(overrides) if missing in a.split('.')[1:]), '--config')
    cli.fail(PROGRAM, f'{field}: no such config field. {cli.last_line(error)}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  # Checked here rather than with flags.mark_flags_as_required, whose validators are global:
  # they would also fire for other programs' flags parsed in the same process (the tests).
  if _CONFIG.value is None or _WORKDIR.value is None:
    cli.fail(PROGRAM, '--config and --workdir are required, e.g. '
             '--config=configs/synthetic.py --workdir=runs/synthetic.')
  try:  # ml_collections defers a missing config file's error to the first use
    _CONFIG.value.get('name')
  except OSError as error:
    cli.fail(PROGRAM, f'--config: {cli.last_line(error)}')
  cli.quiet_libraries()
  run(_CONFIG.value, _WORKDIR.value, _MODE.value)


def run(config, workdir, mode):
  """The main job in `mode` (see the module docstring) for a config and a workdir; exits
  with one line (status 2: fix the config, flags or workdir; 1: a runtime failure; 75:
  preempted, rerun) instead of raising."""
  from data_pipelines import registry
  from scenediff_jax.inference import trained_model
  from scenediff_jax.training import checkpoints, config_checks, preemption
  from scenediff_jax.training import workdir as workdir_lib
  try:
    _run(config, workdir, mode)
  except registry.DataDamaged as damaged:
    cli.fail(PROGRAM, damaged, DATA_MISSING_STATUS)
  except registry.DataMissing as missing:  # its instructions take several lines
    logging.error('%s', missing)
    sys.exit(DATA_MISSING_STATUS)
  except preemption.Preempted as stop:  # the checkpoint is written: retry later
    logging.warning('%s', stop)
    sys.exit(preemption.EXIT_STATUS)
  except (config_checks.ConfigError, workdir_lib.WorkdirError, trained_model.ModelError,
          checkpoints.CheckpointUnreadable, FileNotFoundError) as error:  # the user's to fix
    cli.fail(PROGRAM, error, 2)
  except FloatingPointError as error:
    cli.fail(PROGRAM, error, 1)
  except OSError as error:  # a full or read-only disk, mostly: say which file
    cli.fail(PROGRAM, f'{error.strerror or error}: {error.filename or ""} ({type(error).__name__}'
             '); free space or fix the permissions, then rerun: training resumes from its last '
             'checkpoint.', 1)


def _run(config, workdir, name):
  from data_pipelines import registry
  from scenediff_jax.training import config_checks
  from scenediff_jax.training import workdir as workdir_lib
  mode = MODES[name]
  config_checks.check(config)
  if mode.data != 'none':
    # Before the workdir is touched: a missing dataset leaves nothing behind.
    registry.check_available(config, shapes=mode.data == 'all')
  if mode.kind != 'data':
    from scenediff_jax import compiler  # jax loads here
    compiler.use_persistent_cache(config.get('compilation_cache_dir',
                                             cli.default_compilation_cache_dir()))
  lead = _start_jax(config, check_devices=mode.kind == 'train') if mode.multi_process else True
  workdir_lib.prepare(workdir, create=mode.kind != 'read')
  if mode.kind == 'read':
    _check_trained(workdir)
  workdir_lib.check_config(config, workdir)
  if mode.scores_split:
    builder = registry.scene_builder(config, prepare=False)
    if builder.is_prepared():
      config_checks.check_split(config, registry.splits_of(config, builder))
  if mode.resumes:
    from scenediff_jax.training import pipeline
    pipeline.check_resumable(config, workdir)
  lock = workdir_lib.WorkdirLock(workdir, name) if lead and mode.kind == 'train' else None
  with lock or contextlib.nullcontext():
    if lead and mode.kind != 'read':  # the run is accepted: it is the workdir's now
      workdir_lib.write_config(config, workdir)
    logging.info('Config %s, workdir %s, mode %s.', config.name, workdir, name)
    mode.run(config, workdir)


def _start_jax(config, check_devices):
  """Joins the processes of a multi-process job; returns whether this one leads. With
  `check_devices`, the training batches must split over the devices."""
  import jax

  from scenediff_jax.training import config_checks, distributed, sharding  # jax loads here
  distributed.initialize()
  if check_devices:
    try:
      mesh = sharding.make_mesh(config.get('mesh', sharding.DATA_PARALLEL))
    except ValueError as error:
      raise config_checks.ConfigError(f'--config.mesh: {error}') from None
    config_checks.check_devices(config, jax.device_count(), mesh.shape['data'])
  return distributed.is_lead()


def _check_trained(workdir):
  from scenediff_jax.training import checkpoints
  from scenediff_jax.training import workdir as workdir_lib
  if (workdir_lib.read_config(workdir) is None or
      checkpoints.latest_step(os.path.join(workdir, 'checkpoints', 'scene')) is None):
    raise workdir_lib.WorkdirError(f'{workdir} holds no trained model (config.json and '
                                   'checkpoints/scene): train it first with --mode=train.')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
