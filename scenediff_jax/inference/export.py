"""`--mode=export`: a workdir's trained model as a portable inference bundle in DIR/export/.

The three inference functions (trained_model.export_functions) are `jax.export`ed for
cpu, cuda and tpu with a symbolic batch dimension (and a symbolic step count and query
count), exactly as a workdir's model runs them in process, next to the parameters as .npz,
the config and statistics as JSON, a copy of the loader (bundle.py) as load_bundle.py, and
bundle.json with the SHA-256 of each of those files (checked at load). Non-finite parameters
are refused. The folder is written aside and renamed into place when complete.
"""
import json
import os
import shutil

from absl import logging
import jax
import numpy as np

from scenediff_jax import diffusion
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.inference import bundle, restore, trained_model
from scenediff_jax.inference.atomic_dir import atomic_directory

PLATFORMS = ('cpu', 'cuda', 'tpu')


def export_bundle(workdir, platforms=PLATFORMS) -> str:
  """Writes the model of a training workdir as a bundle in workdir/export/.

  Args:
    workdir: the training workdir (config.json, statistics.json, checkpoints).
    platforms: jax.export platforms to serialise the functions for.
  Returns:
    The bundle's path.
  """
  trained = restore.restore_params(workdir)
  return write_bundle(os.path.join(workdir, 'export'), trained.config, trained.statistics,
                      trained.scene, trained.shape, platforms)


def write_bundle(target, config, statistics, scene_params, shape_params,
                 platforms=PLATFORMS) -> str:
  """Writes a bundle of these parameters to `target`, which appears complete or not at all.

  Args:
    target: the bundle folder (replaced if it exists).
    config: the model's config.
    statistics: its normalization.SceneStatistics (image_size set).
    scene_params, shape_params: the parameter trees.
    platforms: jax.export platforms to serialise the functions for.
  Returns:
    `target`.
  Raises:
    trained_model.ModelError: a parameter holds NaN or infinity (nothing is written).
  """
  flat = bundle.flatten({'scene': jax.device_get(scene_params),
                         'shape': jax.device_get(shape_params)})
  bad = bundle.non_finite(flat)
  if bad:  # a bundle of a diverged model would only sample NaN scenes
    raise trained_model.ModelError(
        f'Not exporting: parameters hold NaN or infinity (in {", ".join(bad[:3])}'
        f'{" ..." if len(bad) > 3 else ""}); the training diverged: train again, or from an '
        'earlier checkpoint.')
  # Plain nested dicts of numpy arrays: exactly the tree the loader rebuilds from params.npz.
  params = bundle.unflatten(flat)
  exported = trained_model.export_functions(config, statistics, params['scene'],
                                            params['shape'], platforms)
  d = config.diffusion
  metadata = {'image_size': list(statistics.image_size), 'max_objects': config.max_objects,
              'classes': list(CLASSES), 'num_parts': config.shape_model.num_parts,
              'intrinsic_size': config.shape_model.intrinsic_size,
              'num_timesteps': d.num_timesteps, 'sampling_steps': d.sampling_steps,
              'guidance_scale': d.guidance_scale, 'platforms': list(platforms),
              # What the sampler inside was trained as (informative: the functions hold it).
              'method': config.get('method', 'diffusion'),
              'prediction': diffusion.prediction_of(config),
              'schedule': d.get('schedule', 'linear'),
              'jax_version': jax.__version__, 'config_name': config.name}
  with atomic_directory(target) as staging:
    for name, e in exported.items():
      with open(os.path.join(staging, f'{name}.jax_exported'), 'wb') as f:
        f.write(e.serialize())
    np.savez(os.path.join(staging, bundle.PARAMS), **flat)
    with open(os.path.join(staging, 'statistics.json'), 'w') as f:
      f.write(statistics.to_json())
    with open(os.path.join(staging, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    shutil.copyfile(bundle.__file__, os.path.join(staging, 'load_bundle.py'))
    # Checksums of the files as written, checked by every load (bundle.check_files).
    metadata['files'] = {name: bundle.file_sha256(os.path.join(staging, name))
                         for name in sorted(os.listdir(staging))}
    with open(os.path.join(staging, bundle.METADATA), 'w') as f:
      json.dump(metadata, f, indent=2)
  logging.info('Inference bundle for %s written to %s', ', '.join(platforms), target)
  return target
