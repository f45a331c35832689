"""Loads an exported inference bundle (`python -m scenediff_jax.main --mode=export`) with
nothing but jax and numpy: this file is copied into every bundle as `load_bundle.py`, so

    import load_bundle
    model = load_bundle.Bundle('runs/synthetic/export')
    scene = model.sample_scene(inputs, seed=0)

runs on a machine without scenediff_jax, flax or the training code. A bundle holds:
  bundle.json          what the functions expect (image size, N_max, classes, timesteps, ...)
  params.npz           scene and shape parameters, flattened as 'scene/…' and 'shape/…'
  statistics.json      the normalisation statistics (also baked into the functions)
  config.json          the training config
  <name>.jax_exported  jax.export serialisations for cpu, cuda and tpu, batch dimension symbolic:
    sample_scene(params, inputs, key_data, timesteps, guidance_scale) → boxes, layout, gaussians, intrinsics
    sample_unconditional(params, mask, key_data, timesteps) → pose, layout, gaussians, intrinsics
    occupancy(shape_params, gaussians, intrinsics, queries) → logits
"""
import json
import os

import jax
from jax import export
import numpy as np

FUNCTIONS = ('sample_scene', 'sample_unconditional', 'occupancy')
METADATA = 'bundle.json'


def is_bundle(path) -> bool:
  return os.path.isfile(os.path.join(path, METADATA))


def flatten(tree, prefix=''):
  """Nested dicts of arrays → {'a/b/c': array}."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}/{key}' if prefix else str(key)
    flat.update(flatten(value, name) if isinstance(value, dict) else {name: np.asarray(value)})
  return flat


def unflatten(flat):
  tree = {}
  for name, value in flat.items():
    *path, leaf = name.split('/')
    node = tree
    for key in path:
      node = node.setdefault(key, {})
    node[leaf] = value
  return tree


def timesteps(num_timesteps, steps):
  """The DDIM steps, descending, evenly spaced from T − 1 to 0."""
  if not 1 <= steps <= num_timesteps:
    raise ValueError(f'steps must be in [1, {num_timesteps}], got {steps}.')
  return np.round(np.linspace(num_timesteps - 1, 0, steps)).astype(np.int32)


def export_platforms(backend):
  """jax.export's names for a jax backend: jax calls CUDA and ROCm devices 'gpu'."""
  return {'gpu': ('cuda', 'rocm')}.get(backend, (backend,))


class Bundle:
  """The functions of a bundle with its parameters bound; inputs and outputs are numpy."""

  def __init__(self, directory, compiler_options=None):
    """compiler_options: for jax.jit of the exported functions (the package passes
    scenediff_jax.compiler.options(); this file runs without the package)."""
    if not is_bundle(directory):
      raise FileNotFoundError(f'{directory} is not an inference bundle (no {METADATA}).')
    with open(os.path.join(directory, METADATA)) as f:
      self.metadata = json.load(f)
    with np.load(os.path.join(directory, 'params.npz')) as data:
      params = unflatten({k: data[k] for k in data.files})
    self.functions, calls = {}, {}
    for name in FUNCTIONS:
      with open(os.path.join(directory, f'{name}.jax_exported'), 'rb') as f:
        self.functions[name] = export.deserialize(bytearray(f.read()))
      # jitted once: no per-call retracing.
      calls[name] = jax.jit(self.functions[name].call, compiler_options=compiler_options)
    platform, exported_for = jax.default_backend(), self.functions['sample_scene'].platforms
    if not set(export_platforms(platform)) & set(exported_for):
      raise RuntimeError(f'This bundle was exported for {exported_for}, not {platform}.')
    self._calls = calls
    # On the device once, not sent with every call (meshing makes hundreds of calls).
    self.scene_params, self.shape_params = jax.device_put((params['scene'], params['shape']))

  def _key(self, seed):
    return jax.random.key_data(jax.random.key(seed))

  def _steps(self, steps):
    return timesteps(self.metadata['num_timesteps'], steps or self.metadata['sampling_steps'])

  def sample_scene(self, inputs, seed=0, steps=None, guidance=None):
    """inputs: image uint8 [B, H, W, 3], K and world_to_cam f32 [B, 3, 3], bbox2d f32
    [B, N, 4], class int32 [B, N], mask bool [B, N] (H, W, N from bundle.json)."""
    scale = self.metadata['guidance_scale'] if guidance is None else guidance
    out = self._calls['sample_scene'](self.scene_params, inputs, self._key(seed),
                                      self._steps(steps), np.float32(scale))
    return jax.tree.map(np.asarray, out)

  def sample_unconditional(self, mask, seed=0, steps=None):
    out = self._calls['sample_unconditional'](self.scene_params, mask, self._key(seed),
                                              self._steps(steps))
    return jax.tree.map(np.asarray, out)

  def occupancy(self, gaussians, intrinsics, queries):
    return np.asarray(self._calls['occupancy'](self.shape_params, gaussians, intrinsics,
                                               queries))
