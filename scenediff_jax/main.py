"""Entry point: `python -m scenediff_jax.main --config=configs/synthetic.py --workdir=DIR`.

Modes:
  build_data    build the config's datasets (scenes and shapes) if missing, then write a
                contact sheet of the scenes
  preview_data  write a contact sheet (DIR/previews/data.png) of scenes of the dataset,
                building only the scenes if they are missing
  train_shape   train the shape autoencoder on the dataset's canonical shapes (resuming
                from DIR/checkpoints/shape), then evaluate it on held-out shapes
                (DIR/eval_shape/)
"""
import logging as logging_lib
import os

from absl import app, flags, logging
from ml_collections import config_flags

from scenediff_jax import data_preview

MODES = ('build_data', 'preview_data', 'train_shape')

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. configs/synthetic.py or configs/synthetic.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for the config, logs and outputs.')
_MODE = flags.DEFINE_enum('mode', 'build_data', MODES, 'What to do.')
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax (dozens of lines per checkpoint) from our logs."""

  def filter(self, record):
    return record.levelno > logging_lib.INFO or '/orbax/' not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config, workdir = _CONFIG.value, _WORKDIR.value
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info('Config %s, workdir %s, mode %s.', config.name, workdir, _MODE.value)
  if _MODE.value == 'train_shape':
    from scenediff_jax.training import shape_trainer  # jax/flax load only for training
    shape_trainer.train_and_evaluate(config, workdir)
    return
  builder = data_preview.build(config) if _MODE.value == 'build_data' else None
  data_preview.preview(config, workdir, builder)


if __name__ == '__main__':
  app.run(main)
