"""Finds, builds and opens the datasets that configs name."""
import os

from absl import logging

# Imported for their registration with TFDS, and to build by name.
from data_pipelines.synth_rooms import builder as synth_rooms_builder

BUILDERS = {
    'synth_rooms': synth_rooms_builder.SynthRooms,
    'synth_shapes': synth_rooms_builder.SynthShapes,
}


def default_data_dir() -> str:
  """Where TFDS data lives unless a config says otherwise: under the user's cache."""
  cache = os.environ.get('XDG_CACHE_HOME', os.path.join(os.path.expanduser('~'), '.cache'))
  return os.path.join(cache, 'scenediff_jax', 'tensorflow_datasets')


def get_builder(name: str, data_dir: str, size: str = 'default', seed: int = 0):
  if name not in BUILDERS:
    raise ValueError(f'Unknown dataset {name!r}; expected one of {sorted(BUILDERS)}.')
  config = synth_rooms_builder.builder_config(size, seed)
  if seed == 0:  # A registered config: TFDS wants it by name.
    config = config.name
  return BUILDERS[name](config=config, data_dir=data_dir, file_format='array_record')


def build(name: str, data_dir: str, size: str = 'default', seed: int = 0):
  """Builds the dataset unless it is already there; returns its builder."""
  b = get_builder(name, data_dir, size, seed)
  if b.is_prepared():
    logging.info('%s/%s is already built in %s.', name, b.builder_config.name, b.data_dir)
  else:
    logging.info('Building %s/%s into %s ...', name, b.builder_config.name, b.data_dir)
    b.download_and_prepare()
  return b
