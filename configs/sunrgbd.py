"""SUN RGB-D scenes (Total3D/Im3D preprocessing) with the shape prior from Pix3D: the paper's
main experiment (PAPER.md "Training (paper)" and "Evaluation protocols").

The data are read from manual directories (data_pipelines/sunrgbd, data_pipelines/pix3d):
  python -m scenediff_jax.main --config=configs/sunrgbd.py --workdir=DIR \
      --config.data.manual_dir=~/data/sunrgbd --config.data.shape_manual_dir=~/data/pix3d
(or set SUNRGBD_DIR and PIX3D_DIR). Variants: `default` (the paper's sizes and schedule,
for accelerators), `paper_recipe` (the same with the paper's diffusion recipe:
docs/recipe.md) and `smoke` (tiny networks, a few steps: checks a set-up end to end).
"""
import os

import ml_collections

from scenediff_jax.config_files import sibling


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  real_data = sibling(__file__, 'real_data')
  if variant not in real_data.VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of configs/sunrgbd.py; use '
                     f'{", ".join(real_data.VARIANTS)}.')
  config = real_data.base_config(variant)
  config.name = f'sunrgbd_{variant}'
  config.data.name = 'sunrgbd'
  config.data.size = 'default'  # builder config: images stored at 320x240 ('full': 640x480)
  config.data.manual_dir = os.environ.get('SUNRGBD_DIR', '~/data/sunrgbd')
  # Up to 32 objects of the 10 classes per image; scenes with more keep the most visible.
  config.max_objects = 8 if variant == 'smoke' else 32
  if variant != 'smoke':
    # "pose 500 epochs on SUN RGB-D; then 50 epochs joint": 10,450 training images
    # (Total3D's split with its mirrored copies) in batches of 16 → 653 steps per epoch.
    config.training.update(diffusion_steps=500 * 653, joint_steps=50 * 653)
  return config
