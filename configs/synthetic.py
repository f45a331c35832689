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

  # The shape autoencoder (SPAGHETTI-style parts); the paper's sizes are code 256, 16 parts,
  # 512-d intrinsics: smaller here so that it trains on a laptop CPU.
  config.shape_model = ml_collections.ConfigDict(dict(
      code_size=64 if smoke else 256, num_parts=4 if smoke else 16,
      intrinsic_size=16 if smoke else 64, width=32 if smoke else 128, num_heads=2 if smoke else 4,
      decoder_depth=1 if smoke else 2))
  config.shape_training = ml_collections.ConfigDict(dict(
      steps=20 if smoke else 2500, batch_size=4 if smoke else 16, learning_rate=1e-3,
      weight_decay=1e-4, surface_points=512 if smoke else 2048,
      occupancy_points=512 if smoke else 1024, points_per_gaussian=16 if smoke else 64,
      surface_weight=10.0, augment_probability=0.5, log_every=5 if smoke else 50,
      checkpoint_every=10 if smoke else 500, seed=0))
  config.shape_eval = ml_collections.ConfigDict(dict(
      num_shapes=4 if smoke else 50, mesh_resolution=32 if smoke else 128,
      coarse_resolution=8 if smoke else 32, num_previews=2 if smoke else 6))

  config.preview = ml_collections.ConfigDict()
  config.preview.split = 'train'
  config.preview.num_scenes = 4 if smoke else 8
  return config
