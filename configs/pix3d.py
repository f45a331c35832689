"""Pix3D: one object per photo, shapes and poses from the image (PAPER.md "Evaluation
protocols": Chamfer distance and F-score of meshes at 128³, instance-averaged).

  python -m scenediff_jax.main --config=configs/pix3d.py --workdir=DIR \
      --config.data.manual_dir=~/data/pix3d
(or set PIX3D_DIR). The split is by model with a fixed seed unless <manual_dir>/splits/
has train.json and test.json (e.g. InstPIFu's non-overlapping split). Pix3D has no depth
and no room, so L_align and the layout train on nothing here. Variants: default,
paper_recipe (the paper's diffusion recipe: docs/recipe.md), smoke.
"""

import ml_collections

from scenediff_jax.config_files import sibling


def get_config(variant: str = 'default') -> ml_collections.ConfigDict:
  real_data = sibling(__file__, 'real_data')
  if variant not in real_data.VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of configs/pix3d.py; use '
                     f'{", ".join(real_data.VARIANTS)}.')
  config = real_data.base_config(variant)
  config.name = f'pix3d_{variant}'
  config.data.name = 'pix3d'
  config.data.size = 'default'  # builder config: photos stored at 256x256
  config.data.manual_dir = config.data.shape_manual_dir
  config.max_objects = 1
  config.denoiser.use_isa = False  # one object per scene: nothing to attend to
  if variant != 'smoke':
    # Not in the paper: about 200 epochs of the ~8,000 training photos in batches of 16.
    config.training.update(diffusion_steps=100_000, joint_steps=0)
  return config
