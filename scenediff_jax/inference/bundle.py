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
    sample_scene(params, inputs, key_data, timesteps, guidance_scale)
      → boxes, layout, gaussians, intrinsics
    sample_unconditional(params, mask, key_data, timesteps) → pose, layout, gaussians, intrinsics
    occupancy(shape_params, gaussians, intrinsics, queries) → logits

bundle.json also records the SHA-256 of every other file ("files"). Loading checks bundle.json's
fields, then every file against its checksum, then that the parameters are finite, before
anything is deserialised or run: a damaged bundle fails with one BundleError naming the file.
"""
import hashlib
import json
import math
import os
import re
import zipfile

import jax
from jax import export
import numpy as np

FUNCTIONS = ('sample_scene', 'sample_unconditional', 'occupancy')
METADATA = 'bundle.json'
PARAMS = 'params.npz'
# The files the loader reads: bundle.json must list a checksum for each of them.
LOADED_FILES = (PARAMS, *(f'{name}.jax_exported' for name in FUNCTIONS))


class BundleError(ValueError):
  """A bundle that cannot be used as it is (bundle.json unreadable or incomplete, a file
  missing or damaged); the message names the file or field and says how to get a good one."""


def _positive_int(x):
  return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _finite_number(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# bundle.json's fields that the loader and the package read: (what is expected, check).
FIELDS = {
    'image_size': ('[height, width], two positive integers',
                   lambda x: isinstance(x, list) and len(x) == 2 and all(map(_positive_int, x))),
    'max_objects': ('a positive integer', _positive_int),
    'num_timesteps': ('a positive integer', _positive_int),
    'sampling_steps': ('a positive integer', _positive_int),
    'guidance_scale': ('a finite number', _finite_number),
    'platforms': ('a non-empty list of platform names',
                  lambda x: isinstance(x, list) and bool(x) and all(isinstance(p, str) for p in x)),
    'files': ('{file name: SHA-256 hex digest}',
              lambda x: isinstance(x, dict) and all(
                  isinstance(v, str) and re.fullmatch('[0-9a-f]{64}', v) for v in x.values())),
}


def reexport_hint(directory):
  """What to do about a bad bundle: export it again from its training workdir."""
  directory = os.path.abspath(directory)
  workdir = (os.path.dirname(directory) if os.path.basename(directory) == 'export'
             else '<its training workdir>')
  return ('export the bundle again (python -m scenediff_jax.main --config=<its config> '
          f'--workdir={workdir} --mode=export).')


def file_sha256(path) -> str:
  """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def read_metadata(directory, fields=tuple(FIELDS)) -> dict:
  """bundle.json of a bundle, with `fields` (names of FIELDS) checked: present, right type.

  Args:
    directory: the bundle folder.
    fields: the fields to check (a caller that reads only some checks only those).
  Returns:
    The metadata dict.
  Raises:
    BundleError: bundle.json is missing, not JSON, or lacks a field or has a wrong one.
  """
  path = os.path.join(directory, METADATA)
  try:
    with open(path) as f:
      metadata = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
    raise BundleError(f'{path} cannot be read ({error}): {reexport_hint(directory)}') from None
  if not isinstance(metadata, dict):
    raise BundleError(f'{path} is not a JSON object: {reexport_hint(directory)}')
  for name in fields:
    if name == 'files' and name not in metadata:
      raise BundleError(f'{directory} was exported before bundles recorded checksums of their '
                        f'files ({METADATA} has no "files"), so its files cannot be checked: '
                        f'{reexport_hint(directory)}')
    if name not in metadata:
      raise BundleError(f'{path} has no "{name}" field: {reexport_hint(directory)}')
    expected, valid = FIELDS[name]
    if not valid(metadata[name]):
      raise BundleError(f'{path}: "{name}" is {json.dumps(metadata[name])}, expected '
                        f'{expected}: {reexport_hint(directory)}')
  if {'num_timesteps', 'sampling_steps'} <= set(fields) and (
      metadata['sampling_steps'] > metadata['num_timesteps']):
    raise BundleError(f'{path}: "sampling_steps" {metadata["sampling_steps"]} exceeds '
                      f'"num_timesteps" {metadata["num_timesteps"]}: {reexport_hint(directory)}')
  return metadata


def check_files(directory, files):
  """Every file of `files` ({name: SHA-256}) exists in `directory` with that checksum, and the
  files the loader reads are among them; BundleError naming the first that is not."""
  for name in LOADED_FILES:
    if name not in files:
      raise BundleError(f'{os.path.join(directory, METADATA)} records no checksum of {name}: '
                        f'{reexport_hint(directory)}')
  for name, sha256 in sorted(files.items()):
    if os.path.basename(name) != name or name in ('', '.', '..'):  # only the bundle's own files
      raise BundleError(f'{os.path.join(directory, METADATA)} lists {name!r}, not a file of '
                        f'the bundle: {reexport_hint(directory)}')
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      raise BundleError(f'{path} is missing: {reexport_hint(directory)}')
    if file_sha256(path) != sha256:
      raise BundleError(f'{path} is damaged (its SHA-256 is not the one {METADATA} recorded at '
                        f'export): {reexport_hint(directory)}')


def _some(names, shown=3):
  more = f' and {len(names) - shown} more' if len(names) > shown else ''
  return ', '.join(names[:shown]) + more


def non_finite(flat) -> list:
  """Names of the arrays of {name: array} that hold NaN or infinity."""
  return sorted(name for name, value in flat.items()
                if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all())


def read_params(directory):
  """params.npz as {'scene': tree, 'shape': tree}; BundleError if unreadable or not finite."""
  path = os.path.join(directory, PARAMS)
  try:
    with np.load(path) as data:
      flat = {k: data[k] for k in data.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
    raise BundleError(f'{path} cannot be read ({error}): {reexport_hint(directory)}') from None
  bad = non_finite(flat)
  if bad:
    raise BundleError(f'{path} holds NaN or infinity (in {_some(bad)}): '
                      f'{reexport_hint(directory)}')
  params = unflatten(flat)
  if not {'scene', 'shape'} <= set(params):
    raise BundleError(f'{path} lacks the scene or shape parameters: {reexport_hint(directory)}')
  return params


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
    """Checks the bundle in `directory` (bundle.json's fields, every file's checksum, finite
    parameters) and binds its functions to its parameters.

    Args:
      directory: the bundle folder.
      compiler_options: for jax.jit of the exported functions (the package passes
        scenediff_jax.compiler.options(); this file runs without the package).
    Raises:
      BundleError: the bundle is incomplete or damaged, or was exported for another platform.
    """
    if not is_bundle(directory):
      raise BundleError(f'{directory} is not an inference bundle (no {METADATA}).')
    # Everything is checked before anything is deserialised: damage fails here, in one line.
    self.metadata = read_metadata(directory)
    check_files(directory, self.metadata['files'])
    params = read_params(directory)
    self.functions, calls = {}, {}
    for name in FUNCTIONS:
      path = os.path.join(directory, f'{name}.jax_exported')
      with open(path, 'rb') as f:
        serialized = bytearray(f.read())
      try:
        self.functions[name] = export.deserialize(serialized)
      except Exception as error:  # pylint: disable=broad-except
        # The checksum matched, so the bytes are the exporter's: another jax wrote them.
        raise BundleError(
            f'{path} cannot be deserialised ({type(error).__name__}: {error}); it was exported '
            f'with jax {self.metadata.get("jax_version")}, this is jax {jax.__version__}: '
            f'{reexport_hint(directory)}') from None
      # jitted once: no per-call retracing.
      calls[name] = jax.jit(self.functions[name].call, compiler_options=compiler_options)
    platform, exported_for = jax.default_backend(), self.functions['sample_scene'].platforms
    if not set(export_platforms(platform)) & set(exported_for):
      raise BundleError(f'{directory} was exported for {", ".join(exported_for)}, not for this '
                        f'{platform}: run it there, or export it again here.')
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
