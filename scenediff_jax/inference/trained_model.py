"""A trained model ready for inference, loaded from a workdir (in process, with flax) or from an
exported bundle (jax and numpy only): `load(path)` gives the same `InferenceModel` either way.

The model's inference is three pure functions of arrays (`inference_functions`); the workdir
path jits them, the bundle path runs their `jax.export`ed serialisation.
"""
import dataclasses
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scenediff_jax import compiler
from scenediff_jax.geometry import gmm
from scenediff_jax.inference import bundle


class ModelError(ValueError):
  """The path given as a model is not one (its message says what was expected)."""


COARSE_RESOLUTION = 16  # first grid of coarse-to-fine meshing
MESH_ROW_SIZE = 512  # points of one object per row of a meshing decoder call

# What one scene's model input holds: batched arrays with these names and dtypes.
INPUT_DTYPES = {'image': np.uint8, 'K': np.float32, 'world_to_cam': np.float32,
                'bbox2d': np.float32, 'class': np.int32, 'mask': np.bool_}


@dataclasses.dataclass
class InferenceModel:
  """sample_scene(inputs, seed, steps, guidance) → world-frame scene, numpy:
       boxes [B, N, 7], layout [B, 7], gaussians [B, N, g, 16], intrinsics [B, N, g, d];
     sample_unconditional(mask, seed, steps) → pose [B, N, 7] (un-normalised pose vectors:
       no 2D box anchors them), layout, gaussians, intrinsics;
     occupancy(gaussians [b, g, 16], intrinsics [b, g, d], queries [b, q, 3]) → logits [b, q].
  `inputs` has INPUT_DTYPES' arrays, image at `image_size` and N = max_objects."""
  image_size: tuple
  max_objects: int
  num_timesteps: int
  sampling_steps: int
  guidance_scale: float
  sample_scene: Callable
  sample_unconditional: Callable
  occupancy: Callable
  source: str  # 'workdir' or 'bundle'

  def object_meshes(self, gaussians, intrinsics, resolution):
    """Canonical meshes of objects (coarse-to-fine marching cubes, all objects' queries in
    shared decoder calls), None where a field has no surface. gaussians [m, g, 16],
    intrinsics [m, g, d]; resolution a multiple of 16 by 2^k."""
    from scenediff_jax.inference import mesh as mesh_lib
    gaussians, intrinsics = np.asarray(gaussians), np.asarray(intrinsics)
    occupancy_fn = lambda objects, points: self.occupancy(gaussians[objects],
                                                          intrinsics[objects], points)
    # Seeded along the part Gaussians' axes: a thin part away from the rest is still found.
    meshes, _ = mesh_lib.extract_meshes(occupancy_fn, len(gaussians), resolution,
                                        coarse_resolution=COARSE_RESOLUTION, rows=mesh_rows(),
                                        row_size=MESH_ROW_SIZE,
                                        seed_points=list(np.asarray(gmm.axis_points(gaussians))))
    return [mesh if len(mesh.faces) else None for mesh in meshes]


def mesh_rows():
  """Rows of MESH_ROW_SIZE points per meshing decoder call: 8,192 points on a CPU; more on an
  accelerator, where a call costs about the same whatever its size."""
  return 16 if jax.default_backend() == 'cpu' else 128


def inference_functions(config, statistics):
  """The pure functions a bundle exports: (sample_scene, sample_unconditional, occupancy),
  taking the parameters as their first argument (scene params, or shape params)."""
  from scenediff_jax.inference import sampling
  from scenediff_jax.models.scene_model import make_model
  from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder
  from scenediff_jax.training import scene_trainer, shape_trainer

  model, schedule = make_model(config), scene_trainer.make_schedule(config)
  conditional = sampling.scene_sampler(model, schedule, config)
  unconditional = sampling.scene_sampler(model, schedule, config, unconditional=True)
  shape_model = shape_trainer.make_model(config)

  def sample_scene(params, inputs, key_data, timesteps, guidance_scale):
    x0 = conditional(params, inputs, jax.random.wrap_key_data(key_data), timesteps,
                     guidance_scale)
    return sampling.decode(x0, inputs, statistics)

  def sample_unconditional(params, mask, key_data, timesteps):
    x0 = unconditional(params, {'mask': mask}, jax.random.wrap_key_data(key_data), timesteps, 1.0)
    return {'pose': statistics.pose.denormalize(x0['pose']),
            'layout': statistics.layout.denormalize(x0['layout']),
            'gaussians': gmm.project(statistics.gaussians.denormalize(x0['gaussians'])),
            'intrinsics': statistics.intrinsics.denormalize(x0['intrinsics'])}

  def occupancy(shape_params, gaussians, intrinsics, queries):
    return shape_model.apply(shape_params, gaussians, intrinsics, queries,
                             method=ShapeAutoencoder.occupancy)

  return sample_scene, sample_unconditional, occupancy


# What a workdir's config.json must hold to rebuild and restore its model.
CONFIG_SECTIONS = ('shape_model', 'shape_training', 'image_encoder', 'denoiser', 'diffusion',
                   'training', 'eval')


def read_config(workdir):
  """The config a workdir was trained with (its config.json).

  Args:
    workdir: the training workdir.
  Returns:
    The ml_collections.ConfigDict.
  Raises:
    FileNotFoundError: there is no config.json.
    ModelError: config.json is not a JSON object or has no positive integer max_objects.
  """
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    try:
      config = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
      raise ModelError(f'{path} is not valid JSON ({error}): {_config_fix(workdir)}') from None
  if not isinstance(config, dict):
    raise ModelError(f'{path} is not a JSON object: {_config_fix(workdir)}')
  n = config.get('max_objects')
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ModelError(f'{path} has no positive integer "max_objects" (got {json.dumps(n)}): '
                     f'{_config_fix(workdir)}')
  missing = [k for k in CONFIG_SECTIONS if not isinstance(config.get(k), dict)]
  if missing:
    raise ModelError(f'{path} lacks the section(s) {", ".join(missing)} that rebuild the '
                     f'model: {_config_fix(workdir)}')
  return ml_collections.ConfigDict(config)


def _config_fix(workdir):
  """What to do about a damaged config.json: the model cannot be rebuilt without it."""
  copy = os.path.join(workdir, 'export', 'config.json')  # every bundle holds one
  if os.path.isfile(copy):
    return f'restore it (the bundle exported from this workdir holds a copy: {copy}).'
  return 'restore it from a copy of the workdir, or train again in a new --workdir.'


def read_statistics(workdir):
  from scenediff_jax.training import workdir as workdir_lib
  try:
    statistics = workdir_lib.read_statistics(os.path.join(workdir, 'statistics.json'))
  except workdir_lib.WorkdirError as error:
    raise ModelError(str(error)) from None
  if statistics.image_size is None:
    raise ModelError(f'{workdir}/statistics.json has no image_size (written before it '
                     'existed): add "image_size": [height, width] of the training images.')
  return statistics


def abstract_batch(config, image_size):
  """Shapes and dtypes of a one-scene training batch (restoring needs no data)."""
  n, g = config.max_objects, config.shape_model.num_parts
  s = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct((1, *shape), dtype)
  return {'image': s((*image_size, 3), jnp.uint8), 'K': s((3, 3)), 'world_to_cam': s((3, 3)),
          'bbox2d': s((n, 4)), 'class': s((n,), jnp.int32), 'mask': s((n,), jnp.bool_),
          'layout': s((7,)), 'pose': s((n, 7)), 'gaussians': s((n, g, 16)),
          'intrinsics': s((n, g, config.shape_model.intrinsic_size))}


def restore_workdir(workdir):
  """(config, statistics, scene params (EMA when the config says so), shape params)."""
  from scenediff_jax.training import checkpoints, scene_trainer, sharding, shape_trainer

  try:
    config = read_config(workdir)
    statistics = read_statistics(workdir)
    # The autoencoder the scene model was trained with (statistics.json says which step).
    _, shape_params = shape_trainer.restore(config, workdir, statistics.shape_step)
  except FileNotFoundError as error:
    raise ModelError(f'{workdir} is an incomplete workdir: {error}') from None
  except checkpoints.CheckpointUnreadable as error:
    raise ModelError(str(error)) from None
  if checkpoints.latest_step(f'{workdir}/checkpoints/scene') is None:
    raise ModelError(f'No scene checkpoint in {workdir}/checkpoints/scene: train it first '
                     '(python -m scenediff_jax.main --mode=train).')
  checkpointer = checkpoints.Checkpointer(f'{workdir}/checkpoints/scene', read_only=True)
  mesh = sharding.make_mesh()
  try:
    with jax.set_mesh(mesh):
      state = scene_trainer.restore_state(checkpointer, config, scene_trainer.make_model(config),
                                          abstract_batch(config, statistics.image_size), mesh)
  except checkpoints.CheckpointUnreadable as error:
    raise ModelError(str(error)) from None
  finally:
    checkpointer.close()
  params = state.ema_params if config.eval.use_ema else state.params
  return config, statistics, params, shape_params


def is_workdir(path):
  return os.path.isdir(os.path.join(path, 'checkpoints', 'scene'))


def locate(path):
  """Which kind of model a path is.

  Args:
    path: a training workdir (with checkpoints/scene) or an export bundle (a workdir's
      export/ or the bundle folder itself).
  Returns:
    ('workdir' | 'bundle', the model's directory).
  Raises:
    ModelError: the path is a file, missing, or neither kind of model.
  """
  if os.path.isfile(path):
    folder = os.path.dirname(os.path.abspath(path))
    hint = f' (here: {folder})' if is_workdir(folder) or bundle.is_bundle(folder) else ''
    raise ModelError(f'Model path {path} is a file, not a model folder: give the training '
                     f'workdir or the export bundle folder that holds bundle.json{hint}.')
  if not os.path.isdir(path):
    raise ModelError(f'Model path {path} does not exist: give a training workdir or an export '
                     'bundle folder.')
  if is_workdir(path):
    return 'workdir', path
  for candidate in (path, os.path.join(path, 'export')):
    if bundle.is_bundle(candidate):
      return 'bundle', candidate
  raise ModelError(f'{path} is not a model: expected a training workdir (with '
                   'checkpoints/scene) or an export bundle (with bundle.json, from '
                   'python -m scenediff_jax.main --mode=export).')


def input_size(path):
  """The input size of a model, read cheaply (no parameters: `load` checks those).

  Args:
    path: a training workdir or export bundle (see `locate`).
  Returns:
    (image_size (H, W), max_objects).
  Raises:
    ModelError: not a model, or the fields read are missing or wrong.
  """
  kind, directory = locate(path)
  if kind == 'bundle':
    try:
      metadata = bundle.read_metadata(directory, ('image_size', 'max_objects'))
    except bundle.BundleError as error:
      raise ModelError(str(error)) from None
    return tuple(metadata['image_size']), metadata['max_objects']
  try:
    max_objects = read_config(directory).max_objects  # first: it names a damaged config.json
    return read_statistics(directory).image_size, max_objects
  except ModelError:
    raise
  except (OSError, ValueError, KeyError) as error:
    raise ModelError(f'{path} looks like a model but cannot be read ({error}); export or '
                     'train it again.') from None


def load(path) -> InferenceModel:
  """The model at `path`, ready to sample.

  Args:
    path: a training workdir or export bundle (see `locate`).
  Returns:
    The InferenceModel.
  Raises:
    ModelError: not a model, or an incomplete or damaged one (a bundle is checked in full,
      every file against its checksum, before anything runs).
  """
  kind, directory = locate(path)
  if kind == 'workdir':
    return load_workdir(directory)
  try:
    return from_bundle(bundle.Bundle(directory, compiler.options()))
  except bundle.BundleError as error:
    raise ModelError(str(error)) from None


def load_workdir(workdir) -> InferenceModel:
  return from_parameters(*restore_workdir(workdir))


def from_parameters(config, statistics, params, shape_params, source='workdir') -> InferenceModel:
  """An InferenceModel of parameters in memory (a restored workdir, or fresh ones)."""
  sample_scene, sample_unconditional, occupancy = (
      compiler.jit(f) for f in inference_functions(config, statistics))
  key_data = lambda seed: jax.random.key_data(jax.random.key(seed))
  d = config.diffusion
  host = lambda tree: jax.tree.map(np.asarray, tree)
  return InferenceModel(
      image_size=tuple(statistics.image_size), max_objects=config.max_objects,
      num_timesteps=d.num_timesteps, sampling_steps=d.sampling_steps,
      guidance_scale=d.guidance_scale,
      sample_scene=lambda inputs, seed, steps, guidance: host(sample_scene(
          params, inputs, key_data(seed), bundle.timesteps(d.num_timesteps, steps),
          np.float32(guidance))),
      sample_unconditional=lambda mask, seed, steps: host(sample_unconditional(
          params, mask, key_data(seed), bundle.timesteps(d.num_timesteps, steps))),
      occupancy=lambda g, i, q: np.asarray(occupancy(shape_params, g, i, q)),
      source=source)


def from_bundle(b) -> InferenceModel:
  """The InferenceModel of a loaded bundle.

  Args:
    b: a bundle.Bundle (its metadata checked when it was constructed).
  Returns:
    The InferenceModel, source 'bundle'.
  """
  m = b.metadata
  return InferenceModel(
      image_size=tuple(m['image_size']), max_objects=m['max_objects'],
      num_timesteps=m['num_timesteps'], sampling_steps=m['sampling_steps'],
      guidance_scale=m['guidance_scale'], sample_scene=b.sample_scene,
      sample_unconditional=b.sample_unconditional, occupancy=b.occupancy, source='bundle')

