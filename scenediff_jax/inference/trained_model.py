"""A trained model ready for inference, loaded from a workdir (in process, with flax) or from an
exported bundle (jax and numpy only): `load(path)` gives the same `InferenceModel` either way,
and evaluation, predict, sample and the benchmarks all sample and mesh through it.

The model's inference is three pure functions of arrays (`inference_functions`); the workdir
path jits them over the parameters `restore.restore_params` reads, the bundle path runs their
`jax.export`ed serialisation.
"""
from collections.abc import Callable
import dataclasses
import os

import jax
from jax import export
import numpy as np

from scenediff_jax import compiler, diffusion
from scenediff_jax.geometry import gmm
from scenediff_jax.inference import bundle, consensus, restore
from scenediff_jax.inference.restore import ModelError

COARSE_RESOLUTION = 16  # first grid of coarse-to-fine meshing
MESH_ROW_SIZE = 512  # points of one object per row of a meshing decoder call

# What one scene's model input holds: batched arrays with these names and dtypes.
INPUT_DTYPES = {'image': np.uint8, 'K': np.float32, 'world_to_cam': np.float32,
                'bbox2d': np.float32, 'class': np.int32, 'mask': np.bool_}


def model_input(image, K, world_to_cam, bbox2d, classes, max_objects) -> dict:
  """One scene's model input (no batch dimension): its n ≤ max_objects detections padded to
  max_objects, every array of its INPUT_DTYPES dtype."""
  n = len(classes)
  if n > max_objects:
    raise ValueError(f'{n} detections, but the model takes at most {max_objects}.')
  pad = lambda x: np.concatenate([x, np.zeros((max_objects - n, *x.shape[1:]), x.dtype)])
  one = {'image': image, 'K': K, 'world_to_cam': world_to_cam,
         'bbox2d': pad(np.asarray(bbox2d, np.float32).reshape(n, 4)),
         'class': pad(np.asarray(classes, np.int32)), 'mask': np.arange(max_objects) < n}
  return {k: np.asarray(v, INPUT_DTYPES[k]) for k, v in one.items()}


def batch_inputs(inputs) -> dict:
  """Model inputs of scenes (`model_input`s) as one batch."""
  return {k: np.stack([one[k] for one in inputs]) for k in INPUT_DTYPES}


def sample_seed(seed, k):
  """The seed of posterior sample k for `seed`. Sample 0 is drawn with the seed itself, so a
  one-sample prediction with --seed=s is the first of the K samples evaluation draws with s."""
  return seed if k == 0 else int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


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

  def sample_posterior(self, inputs, seed, num_samples, steps, guidance):
    """K samples of a batch (sample k drawn with `sample_seed(seed, k)`) and their consensus.

    Returns:
      (the consensus: sample_scene's dict, per object the medoid of the K samples; the list
      of the K sample dicts). With K = 1 the consensus is the one sample.
    """
    samples = [self.sample_scene(inputs, sample_seed(seed, k), steps, guidance)
               for k in range(num_samples)]
    if num_samples == 1:
      return samples[0], samples
    return consensus.combine(samples, np.asarray(inputs['mask']).sum(1)), samples

  def object_meshes(self, gaussians, intrinsics, resolution, coarse_resolution=COARSE_RESOLUTION):
    """Canonical meshes of objects (coarse-to-fine marching cubes from `coarse_resolution`,
    all objects' queries in shared decoder calls), None where a field has no surface.
    gaussians [m, g, 16], intrinsics [m, g, d]; resolution = coarse_resolution · 2^k."""
    from scenediff_jax.inference import mesh as mesh_lib
    gaussians, intrinsics = np.asarray(gaussians), np.asarray(intrinsics)
    occupancy_fn = lambda objects, points: self.occupancy(gaussians[objects],
                                                          intrinsics[objects], points)
    # Seeded along the part Gaussians' axes: a thin part away from the rest is still found.
    meshes, _ = mesh_lib.extract_meshes(occupancy_fn, len(gaussians), resolution,
                                        coarse_resolution=coarse_resolution, rows=mesh_rows(),
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
  from scenediff_jax.models import scene_model, shape_autoencoder

  model, schedule = scene_model.make_model(config), diffusion.make_schedule(config)
  conditional = sampling.scene_sampler(model, schedule, config)
  unconditional = sampling.scene_sampler(model, schedule, config, unconditional=True)
  shape_model = shape_autoencoder.make_model(config)

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
                             method=shape_autoencoder.ShapeAutoencoder.occupancy)

  return sample_scene, sample_unconditional, occupancy


def is_workdir(path):
  return os.path.isdir(os.path.join(path, 'checkpoints', 'scene'))


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """Where a model is and the input it takes, read without its parameters."""
  kind: str  # 'workdir' or 'bundle'
  directory: str
  image_size: tuple  # (H, W) the model's images are resized to
  max_objects: int
  config: object = None  # a workdir's config and statistics, read once for `load`
  statistics: object = None


def find_model(path) -> ModelSource:
  """Which kind of model a path is, and its input size (cheaply: `load` checks the rest).

  Args:
    path: a training workdir (with checkpoints/scene) or an export bundle (a workdir's
      export/ or the bundle folder itself).
  Returns:
    The ModelSource.
  Raises:
    ModelError: the path is a file, missing, neither kind of model, or its fields are
      missing or wrong.
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
    try:
      config = restore.read_config(path)  # first: it names a damaged config.json
      statistics = restore.read_statistics(path)
    except (OSError, KeyError) as error:
      raise ModelError(f'{path} looks like a model but cannot be read ({error}); export or '
                       'train it again.') from None
    return ModelSource('workdir', path, tuple(statistics.image_size), config.max_objects,
                       config, statistics)
  for candidate in (path, os.path.join(path, 'export')):
    if bundle.is_bundle(candidate):
      try:
        metadata = bundle.read_metadata(candidate, ('image_size', 'max_objects'))
      except bundle.BundleError as error:
        raise ModelError(str(error)) from None
      return ModelSource('bundle', candidate, tuple(metadata['image_size']),
                         metadata['max_objects'])
  raise ModelError(f'{path} is not a model: expected a training workdir (with '
                   'checkpoints/scene) or an export bundle (with bundle.json, from '
                   'python -m scenediff_jax.main --mode=export).')


def load(model) -> 'InferenceModel':
  """The model, ready to sample.

  Args:
    model: a path (a training workdir or export bundle, see `find_model`) or a ModelSource.
  Returns:
    The InferenceModel.
  Raises:
    ModelError: not a model, or an incomplete or damaged one (a bundle is checked in full,
      every file against its checksum, before anything runs).
  """
  source = model if isinstance(model, ModelSource) else find_model(model)
  if source.kind == 'workdir':
    return from_trained(restore.restore_params(source.directory, source.config,
                                               source.statistics))
  try:
    return from_bundle(bundle.Bundle(source.directory, compiler.options()))
  except bundle.BundleError as error:
    raise ModelError(str(error)) from None


def from_trained(trained: restore.TrainedParams) -> 'InferenceModel':
  """The InferenceModel of a workdir's restored parameters."""
  return from_parameters(trained.config, trained.statistics, trained.scene, trained.shape)


def _specs(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


def export_functions(config, statistics, scene_params, shape_params, platforms):
  """{name: jax.export.Exported} of bundle.FUNCTIONS for `platforms`, with a symbolic batch
  dimension, step count and query count: what a bundle holds and what a workdir runs."""
  sample_scene, sample_unconditional, occupancy = inference_functions(config, statistics)
  b, s, q = export.symbolic_shape('b, s, q')
  height, width = statistics.image_size
  n, g = config.max_objects, config.shape_model.num_parts
  d = config.shape_model.intrinsic_size
  spec = lambda shape, dtype=np.float32: jax.ShapeDtypeStruct(shape, dtype)
  inputs = {'image': spec((b, height, width, 3), np.uint8), 'K': spec((b, 3, 3)),
            'world_to_cam': spec((b, 3, 3)), 'bbox2d': spec((b, n, 4)),
            'class': spec((b, n), np.int32), 'mask': spec((b, n), np.bool_)}
  key = spec((2,), np.uint32)  # threefry key data, jax.random.key_data(jax.random.key(seed))
  steps = spec((s,), np.int32)
  scene, shape = _specs(scene_params), _specs(shape_params)
  run = lambda f, *args: export.export(jax.jit(f), platforms=platforms)(*args)
  return {
      'sample_scene': run(sample_scene, scene, inputs, key, steps, spec(())),
      'sample_unconditional': run(sample_unconditional, scene, spec((b, n), np.bool_), key, steps),
      'occupancy': run(occupancy, shape, spec((b, g, 16)), spec((b, g, d)), spec((b, q, 3))),
  }


def from_parameters(config, statistics, params, shape_params, source='workdir') -> InferenceModel:
  """An InferenceModel of parameters in memory (a restored workdir, or fresh ones).

  It runs the functions exactly as a bundle exported from them does: `export_functions` for
  this platform, then their jitted `call`. (Traced with a symbolic batch, XLA's programs
  differ from plainly jitted ones in the last bit of a few values, and K-sample consensus
  turns such a bit into another chosen sample: one route keeps evaluation, predict and the
  bundle bit-equal.)
  """
  platforms = bundle.export_platforms(jax.default_backend())
  exported = export_functions(config, statistics, params, shape_params, platforms)
  sample_scene, sample_unconditional, occupancy = (
      jax.jit(exported[name].call, compiler_options=compiler.options())
      for name in bundle.FUNCTIONS)
  key_data = lambda seed: jax.random.key_data(jax.random.key(seed))
  d = config.diffusion
  host = lambda tree: jax.tree.map(np.asarray, tree)
  return InferenceModel(
      image_size=tuple(statistics.image_size), max_objects=config.max_objects,
      num_timesteps=d.num_timesteps, sampling_steps=d.sampling_steps,
      guidance_scale=d.guidance_scale,
      sample_scene=lambda inputs, seed, steps, guidance: host(sample_scene(
          params, inputs, key_data(seed), diffusion.ddim_timesteps(d.num_timesteps, steps),
          np.float32(guidance))),
      sample_unconditional=lambda mask, seed, steps: host(sample_unconditional(
          params, mask, key_data(seed), diffusion.ddim_timesteps(d.num_timesteps, steps))),
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

