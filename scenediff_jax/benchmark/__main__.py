"""`python -m scenediff_jax.benchmark`: see the package docstring."""
import datetime
import json
import os
import tempfile

from absl import app, flags, logging

from scenediff_jax import cli, config_files

SECTIONS = ('nearest', 'train_step', 'sampling', 'mesh', 'input')

_QUICK = flags.DEFINE_bool('quick', False, 'Tiny sizes and few repeats (CI checks the JSON).')
_OUT = flags.DEFINE_string('out', None, 'Also write the results to this JSON file.')
_SECTIONS = flags.DEFINE_list('sections', ','.join(SECTIONS), f'Which of {SECTIONS} to run.')
_CONFIG = flags.DEFINE_string('config', 'configs/synthetic.py',
                              'Config file whose smoke/default/paper variants are measured.')
_MODEL = flags.DEFINE_string('model', None, 'A trained workdir or export bundle for the '
                             'sampling section (a workdir also gives DDPM vs DDIM metrics).')
_SHAPE_WORKDIR = flags.DEFINE_string(
    'shape_workdir', None, 'A workdir whose shape autoencoder the mesh section uses '
    '(default: an analytic sphere).')
_TRAIN_VARIANTS = flags.DEFINE_list('train_variants', 'default,paper',
                                     'Config variants whose train step is measured.')
_TRAIN_STAGES = flags.DEFINE_list('train_stages', 'diffusion,joint',
                                   'Train-step stages measured: diffusion and/or joint.')
_TRAIN_INIT = flags.DEFINE_enum('train_init', 'device', ['device', 'host'],
                                 'Create the train state on the default device, or on the host '
                                 'CPU and then place it (compile-time experiment).')
_CACHE = flags.DEFINE_string('compilation_cache_dir', None, 'The persistent compilation cache '
                             'of this run (default: a new temporary one, so compiles are cold).')
_SAMPLING_VARIANT = flags.DEFINE_string('sampling_variant', 'default', 'Config variant of the '
                                        'random-init model the sampling section times.')
_COMPUTE_DTYPE = flags.DEFINE_enum('compute_dtype', None, ['float32', 'bfloat16'],
                                   'Override every measured config\'s training.compute_dtype.')
_EVAL_SCENES = flags.DEFINE_integer('eval_scenes', 100,
                                    'Test scenes for the DDPM vs DDIM pose metrics.')


def config_loader(path, compute_dtype=None):
  """variant → ConfigDict of the config file at `path` (as main's --config=path:variant),
  with training.compute_dtype set to `compute_dtype` if one is given."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist; run from the repository root or give '
                            '--config.')
  get_config = config_files.load(path).get_config

  def load(variant):
    config = get_config(variant)
    if compute_dtype:
      config.training.compute_dtype = compute_dtype
    return config
  return load


def run_section(name, quick, load_config):
  from scenediff_jax.benchmark import data_input, meshing, nearest, sampling, train_step
  if name == 'nearest':
    return nearest.bench_nearest(quick)
  if name == 'train_step':
    return train_step.bench_train_step(quick, load_config, _TRAIN_VARIANTS.value,
                                       _TRAIN_STAGES.value, _TRAIN_INIT.value == 'host',
                                       _CONFIG.value)
  if name == 'sampling':
    return sampling.bench_sampling(quick, load_config, _MODEL.value, _EVAL_SCENES.value,
                                   _SAMPLING_VARIANT.value)
  if name == 'mesh':
    return meshing.bench_mesh(quick, _SHAPE_WORKDIR.value)
  model = _MODEL.value
  return data_input.bench_input(quick, load_config, model if model and os.path.isdir(
      os.path.join(model, 'checkpoints')) else None)


def benchmark():
  unknown = set(_SECTIONS.value) - set(SECTIONS)
  if unknown:
    raise ValueError(f'Unknown --sections {sorted(unknown)}; choose from {",".join(SECTIONS)}.')
  if not _TRAIN_STAGES.value or set(_TRAIN_STAGES.value) - {'diffusion', 'joint'}:
    raise ValueError(f'--train_stages={",".join(_TRAIN_STAGES.value)}: give diffusion, joint '
                     'or both.')
  from scenediff_jax import compiler
  from scenediff_jax.benchmark import timing
  load_config = config_loader(_CONFIG.value, _COMPUTE_DTYPE.value)
  # A fresh persistent cache: compile times are cold, and the train step's restart finds
  # what this run compiled (a JAX_COMPILATION_CACHE_DIR of the environment wins).
  cache = compiler.use_persistent_cache(_CACHE.value or tempfile.mkdtemp(prefix='jax_cache_'))
  results = {'date': datetime.date.today().isoformat(), 'quick': _QUICK.value,
             'machine': timing.machine(), 'compilation_cache': cache}
  for name in SECTIONS:
    if name in _SECTIONS.value:
      logging.info('Benchmark section %s ...', name)
      results[name] = run_section(name, _QUICK.value, load_config)
      logging.info('%s: %s', name, json.dumps(results[name].get('check')))
      _write(results)  # after every section: a long run that is cut short keeps what it has
  print(json.dumps(results, indent=2))
  if _OUT.value:
    logging.info('Wrote %s', _OUT.value)


def _write(results):
  if _OUT.value:
    with open(_OUT.value + '.tmp', 'w') as f:
      f.write(json.dumps(results, indent=2) + '\n')
    os.replace(_OUT.value + '.tmp', _OUT.value)


def main(argv):
  cli.run_program('benchmark', benchmark, argv, (FileNotFoundError, ValueError))


if __name__ == '__main__':
  app.run(main)
