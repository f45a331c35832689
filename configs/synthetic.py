"""SynthRooms, our procedural benchmark: the embedded default experiment.

Variants: `default` (the full dataset) and `smoke` (tiny, runs in seconds), e.g.
  python -m scenediff_jax.main --config=configs/synthetic.py:smoke --workdir=/tmp/smoke
"""
import ml_collections

from data_pipelines.registry import default_data_dir


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  if variant not in ('default', 'smoke'):
    raise ValueError(f'Unknown variant {variant!r} of configs/synthetic.py; use default or smoke.')
  smoke = variant == 'smoke'
  config = ml_collections.ConfigDict()
  config.name = f'synthetic_{variant}'
  config.data_dir = default_data_dir()  # where TFDS data lives

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synth_rooms'
  config.data.size = 'tiny' if smoke else 'default'  # SynthRooms builder config
  config.data.seed = 0  # generation seed: every scene and shape follows from it
  config.data.shape_name = 'synth_shapes'  # canonical shapes of the same objects

  config.preview = ml_collections.ConfigDict()
  config.preview.split = 'train'
  config.preview.num_scenes = 4 if smoke else 8
  return config
