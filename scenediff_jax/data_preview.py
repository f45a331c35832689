"""The data modes of main: build the config's datasets, and write a contact sheet of them."""
import os

from absl import logging

from data_pipelines import contact_sheet, registry
from scenediff_jax.geometry.classes import CLASSES


def build(config):
  """Builds the config's scene dataset (and its shape dataset) unless already built."""
  builder = registry.scene_builder(config)
  if config.data.get('shape_name'):
    registry.shape_builder(config)
  return builder


def preview(config, workdir, builder=None) -> str:
  """Writes `workdir/previews/data.png` (building the scenes if missing, unless `builder`
  is given); returns its path."""
  if builder is None:
    builder = registry.scene_builder(config)
  source = builder.as_data_source(config.preview.split)
  count = min(config.preview.num_scenes, len(source))
  sheet = contact_sheet.contact_sheet([source[i] for i in range(count)], CLASSES)
  path = os.path.join(workdir, 'previews', 'data.png')
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sheet.save(path)
  logging.info('%d %s scenes of %s/%s: contact sheet written to %s', count, config.preview.split,
               config.data.name, builder.builder_config.name, path)
  return path
