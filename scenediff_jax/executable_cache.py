"""Compiled programs on disk under a key that needs no tracing: a restart skips tracing and
lowering as well as compiling (BENCHMARKS.md, section 6).

JAX's persistent compilation cache (compiler.use_persistent_cache) is keyed by the lowered
program, so every new process still traces the Python function and lowers it before the
cache can answer: at paper size on a CPU, about 6 s for the train step before its load.
Here the key is what determines the program without tracing it: this package's source
files; the versions of jax, jaxlib, flax, optax and numpy; JAX's tracing settings, XLA's
flags and options and the devices; the arguments' paths, shapes, dtypes and shardings, and
the static arguments; and what the function closes over, which the caller names
(`depends_on`: the config, the model, the normalisation statistics). A hit loads the
executable (jax.experimental.serialize_executable); a miss compiles as jax.jit would (the
persistent cache may answer) and writes the executable for the next process. A file that
cannot be read is removed and the program compiled: it never stops a run.

Only a program that XLA compiled in this process is written. One that JAX's persistent
cache answered cannot be: XLA serialises a deserialised executable without its kernels
(jaxlib 0.12, CPU: "Function ... not found" when the copy runs), so such a program is
traced again by the next process, as before this module.

The files live in the persistent cache's folder, under `executables/`, and are on or off
with it. One process only: under jax.distributed every process compiles as before.
"""
import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import pickle
import tempfile

from absl import logging
import flax.linen as nn
import jax
from jax.experimental import serialize_executable
import ml_collections
import numpy as np

from scenediff_jax import compiler

SUBDIR = 'executables'
KEEP_PER_NAME = 16  # the older files of a program (earlier code, configs) are removed
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml_collections')
_CACHE_REQUEST = '/jax/compilation_cache/compile_requests_use_cache'
_CACHE_HIT = '/jax/compilation_cache/cache_hits'
_LOADED = []  # the names of the programs this process loaded from disk


def loaded() -> tuple[str, ...]:
  """The names of the programs this process has loaded from disk so far (logs, tests)."""
  return tuple(_LOADED)


def directory() -> str | None:
  """The executables' folder: `executables/` in JAX's persistent cache, None when it is off."""
  cache = jax.config.jax_compilation_cache_dir
  return os.path.join(cache, SUBDIR) if cache else None


@functools.cache
def source_fingerprint() -> str:
  """fingerprint_of this package: any edit of its code is another key."""
  return fingerprint_of(os.path.dirname(os.path.abspath(__file__)))


def fingerprint_of(root) -> str:
  """sha256 of the Python files under `root`, their paths and bytes."""
  paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root)
                 for name in names if name.endswith('.py'))
  digest = hashlib.sha256()
  for path in paths:
    digest.update(os.path.relpath(path, root).encode() + b'\0')
    with open(path, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()


def _feed(digest, value):
  """Adds `value` to `digest` by content: arrays by their bytes (a repr rounds them)."""
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    array = np.ascontiguousarray(value)
    digest.update(f'array {array.dtype} {array.shape}:'.encode())
    digest.update(array.tobytes())
  elif isinstance(value, ml_collections.ConfigDict):
    _feed(digest, value.to_dict())
  elif isinstance(value, nn.Module):  # its fields, submodules' included
    digest.update(f'module {value!r};'.encode())
  elif dataclasses.is_dataclass(value) and not isinstance(value, type):
    digest.update(f'{type(value).__qualname__}('.encode())
    for field in dataclasses.fields(value):
      digest.update(f'{field.name}='.encode())
      _feed(digest, getattr(value, field.name))
    digest.update(b')')
  elif isinstance(value, dict):
    digest.update(b'{')
    for key in sorted(value, key=repr):
      _feed(digest, key)
      _feed(digest, value[key])
    digest.update(b'}')
  elif isinstance(value, (list, tuple)):
    digest.update(f'{type(value).__qualname__}['.encode())
    for item in value:
      _feed(digest, item)
    digest.update(b']')
  else:  # numbers, strings, dtypes; an object whose repr holds its address never hits
    digest.update(f'{type(value).__qualname__} {value!r};'.encode())


def _environment() -> dict:
  versions = {}
  for package in _PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      versions[package] = None
  return {'code': source_fingerprint(), 'versions': versions, 'jax_config': _tracing_settings(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'compiler_options': compiler.options(), 'backend': jax.default_backend(),
          'platform_version': jax.devices()[0].client.platform_version,
          'devices': [(d.id, d.device_kind, d.process_index) for d in jax.devices()]}


def _tracing_settings() -> dict:
  """JAX's settings that change what a function traces to (those its own jit cache keys
  on), not the ones that only say where to run or cache (JAX_PLATFORMS differs between a
  benchmark and its restart, say)."""
  try:
    from jax._src import config as jax_config  # pylint: disable=import-outside-toplevel
    names = jax_config.trace_context_names()
  except (ImportError, AttributeError, TypeError):  # another jax: every setting, a stricter key
    names = jax.config.values
  return {name: repr(jax.config.values[name]) for name in sorted(names)
          if name in jax.config.values and 'cache' not in name}


def _sharding_key(x):
  sharding = getattr(x, 'sharding', None)
  if sharding is None:
    return None
  placement = sorted((d.id, repr(index)) for d, index in
                     sharding.devices_indices_map(tuple(x.shape)).items())
  return [repr(sharding), placement]


def _arguments_key(args) -> list:
  return [(jax.tree_util.keystr(path), tuple(x.shape), str(x.dtype),
           bool(getattr(x, 'weak_type', False)), _sharding_key(x))
          for path, x in jax.tree_util.tree_flatten_with_path(args)[0]]


def program_key(name, args, static, depends_on) -> str:
  """The hex digest that names a program's file (see the module's docstring)."""
  digest = hashlib.sha256()
  _feed(digest, json.dumps({'name': name, 'environment': _environment(),
                            'arguments': _arguments_key(args)}, sort_keys=True, default=repr))
  _feed(digest, static)
  _feed(digest, depends_on)
  return digest.hexdigest()


def _output_structure(in_tree, out_tree):
  """A picklable recipe for out_tree: a tuple output's parts that have the structure of an
  argument (a train state, whose static fields hold the optimizer's functions) are taken from
  that argument when loading; the rest (metrics, parameter dicts) are pickled."""
  arguments = in_tree.children()[0].children()
  try:
    return ('tree', pickle.dumps(out_tree))
  except (pickle.PicklingError, AttributeError, TypeError):
    if out_tree.node_data() is None or out_tree.node_data()[0] is not tuple:
      raise
  parts = []
  for child in out_tree.children():
    same = [i for i, argument in enumerate(arguments) if argument == child]
    parts.append(('argument', same[0]) if same else ('tree', pickle.dumps(child)))
  return ('tuple', parts)


def _rebuild_outputs(recipe, arguments):
  kind, value = recipe
  if kind == 'tree':
    return pickle.loads(value)
  skeleton = lambda tree: jax.tree.unflatten(tree, [0] * tree.num_leaves)
  return jax.tree.structure(tuple(arguments[v] if k == 'argument' else skeleton(pickle.loads(v))
                                  for k, v in value))


class CachedProgram:
  """A jitted function called like itself, whose executables are loaded from and written to
  directory() (one per static arguments and argument signature).

  Args:
    jitted: the jax.jit (compiler.jit) function.
    name: names its files (and the log lines).
    static_argnums: the positions that `jitted` takes as static.
    depends_on: everything the function closes over that is not this package's code: its
      config, model, schedule, statistics. Arrays count by their bytes.
  """

  def __init__(self, jitted, name: str, static_argnums=(), depends_on=()):
    self.jitted, self.name = jitted, name
    self.static_argnums = tuple(static_argnums)
    self.depends_on = depends_on
    self._programs = {}

  def __call__(self, *args):
    program = self._program(args)
    return self.jitted(*args) if program is None else program(*self._dynamic(args))

  def compile(self, *args):
    """The program for these arguments, as jax.stages.Compiled: loaded from disk, or traced
    and compiled (and then written), once per signature in this process."""
    program = self._program(args)
    return self.jitted.lower(*args).compile() if program is None else program

  def _program(self, args):
    """This signature's program, or None where files are off: without the persistent cache,
    across processes, and inside a trace (eval_shape)."""
    if directory() is None or jax.process_count() > 1:
      return None
    dynamic = self._dynamic(args)
    leaves, treedef = jax.tree.flatten(dynamic)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
      return None
    static = tuple(args[i] for i in self.static_argnums)
    signature = (static, treedef,
                 tuple((x.shape, x.dtype, getattr(x, 'sharding', None)) for x in leaves))
    program = self._programs.get(signature)
    if program is None:
      program = self._programs[signature] = self._load_or_compile(args, static, dynamic)
    return program

  def lower(self, *args):
    return self.jitted.lower(*args)

  def _cache_size(self) -> int:
    """Programs held: compiled or loaded here, and jit's own (jax.jit's private counter)."""
    return len(self._programs) + self.jitted._cache_size()  # pylint: disable=protected-access

  def _dynamic(self, args):
    return tuple(a for i, a in enumerate(args) if i not in self.static_argnums)

  def _load_or_compile(self, args, static, dynamic):
    key = program_key(self.name, dynamic, static, self.depends_on)
    path = os.path.join(directory(), f'{self.name}-{key[:32]}.exe')
    in_tree = jax.tree.structure((dynamic, {}))
    if os.path.exists(path):
      try:
        with open(path, 'rb') as f:
          saved = pickle.load(f)
        if saved['key'] != key:
          raise ValueError('another program under the same file name')
        compiled = serialize_executable.deserialize_and_load(
            saved['executable'], in_tree, _rebuild_outputs(saved['outputs'], dynamic))
        _LOADED.append(self.name)
        logging.info('%s: executable loaded from %s (no tracing).', self.name, path)
        return compiled
      except Exception as error:  # pylint: disable=broad-except
        logging.warning('%s: %s cannot be used (%s: %s); compiling again.', self.name, path,
                        type(error).__name__, error)
        _remove(path)
    with _compile_events() as events:
      compiled = self.jitted.lower(*args).compile()
    if _freshly_compiled(events):
      self._write(path, key, compiled, in_tree)
    else:  # XLA cannot serialise an executable it deserialised (it would lack its kernels)
      logging.info("%s: compiled by JAX's persistent cache, which an executable file cannot be "
                   'made from; the next process traces it again.', self.name)
    return compiled

  def _write(self, path, key, compiled, in_tree):
    try:
      executable, _, out_tree = serialize_executable.serialize(compiled)
      payload = pickle.dumps({'key': key, 'executable': executable,
                              'outputs': _output_structure(in_tree, out_tree)})
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False,
                                       suffix='.tmp') as f:
        f.write(payload)
      os.replace(f.name, path)  # atomic: a reader sees the old file or the whole new one
      _prune(os.path.dirname(path), self.name)
    except Exception as error:  # pylint: disable=broad-except
      logging.warning('%s: executable not saved (%s: %s); the next process traces it again.',
                      self.name, type(error).__name__, error)


@contextlib.contextmanager
def _compile_events():
  """The jax.monitoring events recorded while the block runs."""
  events = []
  listener = lambda event, **_: events.append(event)
  jax.monitoring.register_event_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_listener(listener)


def _freshly_compiled(events) -> bool:
  """Whether XLA compiled the program (JAX asked its persistent cache and missed) rather
  than loading it from that cache: an executable that XLA deserialised serialises without
  its kernels (jaxlib 0.12, CPU: 'Function ... not found' when the copy runs). Unknown
  events (another jax) count as not fresh, so nothing doubtful is ever written."""
  return (_CACHE_REQUEST in events) and (_CACHE_HIT not in events)


def _prune(folder, name):
  """Keeps the KEEP_PER_NAME newest files of `name`."""
  files = [os.path.join(folder, f) for f in os.listdir(folder)
           if f.startswith(f'{name}-') and f.endswith('.exe')]
  for path in sorted(files, key=os.path.getmtime)[:-KEEP_PER_NAME]:
    _remove(path)


def _remove(path):
  try:
    os.remove(path)
  except OSError:
    pass  # another process removed it first
