"""Executables on disk under a key that needs no tracing (executable_cache.py): a new
process loads the train step and takes exactly the steps the compiled one took, donation
included, and a program that JAX's persistent cache answered is never written; the key
changes with each thing the program depends on and only with them; an unreadable file is
compiled again; inside a trace it is plain jit."""
import logging
import os
import shutil
import subprocess
import sys
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from scenediff_jax import diffusion, executable_cache
from scenediff_jax.benchmark import train_step as bench
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import scene_trainer, sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def folder(tmp_path, monkeypatch):
  """A private executables folder (the suite's shared cache stays out of these tests)."""
  monkeypatch.setattr(executable_cache, 'directory', lambda: str(tmp_path / 'executables'))
  return tmp_path / 'executables'


def _files(folder, name):
  return sorted(f for f in os.listdir(folder) if f.startswith(f'{name}-')) if folder.exists() \
      else []


def _three_steps(out):
  """A new process's three smoke train steps from a fresh state (run by the test below):
  their state and metrics, whether the first step's input buffers were donated, and which
  programs came from the executables folder."""
  config = synthetic.get_config('smoke')
  config.training.warmup_steps = 1
  model = make_model(config)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(bench.random_batch(config, 2), mesh)
    state = scene_trainer.initial_state(config, model, batch, mesh)
    step = scene_trainer.make_train_step(model, diffusion.make_schedule(config),
                                         bench.plausible_statistics(config), config)
    first = jax.tree.leaves(state.params)[0]
    state, metrics = step(state, batch, jax.random.key(0), False)
    donated = first.is_deleted()
    for i in range(1, 3):
      state, metrics = step(state, batch, jax.random.key(i), False)
  leaves = {f'leaf_{i}': np.asarray(x) for i, x in enumerate(jax.tree.leaves((state, metrics)))}
  np.savez(out, donated=donated, loaded=np.array(executable_cache.loaded(), dtype=object),
           programs=step._cache_size(), **leaves)


def _run(cache, out):
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(cache), 'PYTHONPATH': ROOT}
  done = subprocess.run([sys.executable, __file__, str(out)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(np.load(out, allow_pickle=True))


def test_a_new_process_loads_the_train_step_and_takes_the_same_steps(tmp_path):
  cache = tmp_path / 'cache'  # fresh: JAX's persistent cache has not seen these programs
  folder = cache / executable_cache.SUBDIR
  compiled = _run(cache, tmp_path / 'compiled.npz')
  assert list(compiled['loaded']) == [] and compiled['donated']
  assert len(_files(folder, 'scene_init')) == len(_files(folder, 'scene_train_step')) == 1
  loaded = _run(cache, tmp_path / 'loaded.npz')
  assert list(loaded['loaded']) == ['scene_init', 'scene_train_step']
  assert loaded['donated'] and loaded['programs'] == 1  # the state it returns fits it too
  leaves = [k for k in compiled if k.startswith('leaf_')]
  for k in leaves:  # bit for bit: the same program
    np.testing.assert_array_equal(loaded[k], compiled[k], err_msg=k)
  # Without the files, JAX's persistent cache answers: that executable must not be written
  # (a deserialised one serialises without its kernels, and the next process would crash).
  shutil.rmtree(folder)
  answered = _run(cache, tmp_path / 'answered.npz')
  assert list(answered['loaded']) == [] and not _files(folder, 'scene_train_step')
  again = _run(cache, tmp_path / 'again.npz')
  assert list(again['loaded']) == []
  for k in leaves:
    np.testing.assert_array_equal(again[k], compiled[k], err_msg=k)


def test_a_train_step_closing_over_other_statistics_is_another_program(folder):
  config = synthetic.get_config('smoke')
  model, schedule = make_model(config), diffusion.make_schedule(config)
  mesh = sharding.make_mesh()

  def statistics():  # means no earlier process compiled with: XLA compiles, files are written
    result = bench.plausible_statistics(config)
    object.__setattr__(result.pose, 'mean', result.pose.mean + _unseen_scale() - 1)
    return result

  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(bench.random_batch(config, 2), mesh)
    before = executable_cache.loaded()
    for i in range(2):
      step = scene_trainer.make_train_step(model, schedule, statistics(), config)
      step(scene_trainer.initial_state(config, model, batch, mesh), batch, jax.random.key(0),
           False)
      assert len(_files(folder, 'scene_train_step')) == i + 1
    assert 'scene_train_step' not in executable_cache.loaded()[len(before):]


def test_the_key_follows_what_the_program_depends_on(monkeypatch):
  config = synthetic.get_config('smoke')
  statistics = bench.plausible_statistics(config)
  x = jnp.zeros((4, 3))
  key = lambda **change: executable_cache.program_key(
      change.get('name', 'f'), change.get('args', (x,)), change.get('static', (False,)),
      change.get('depends_on', (config, statistics)))
  reference = key()
  # Equal values in other objects: the same key.
  assert key(args=(jnp.ones((4, 3)),), depends_on=(synthetic.get_config('smoke'),
                                                   bench.plausible_statistics(config))) \
      == reference
  nudged = bench.plausible_statistics(config)
  scale = np.array(nudged.pose.scale)
  scale[0] = np.nextafter(scale[0], 1.0)  # one ulp: a repr would round it away
  object.__setattr__(nudged.pose, 'scale', scale)
  other_config = synthetic.get_config('smoke')
  other_config.training.ema_decay = 0.5
  changed = [key(name='g'), key(args=(jnp.zeros((4, 2)),)), key(args=(jnp.zeros((4, 3), int),)),
             key(args=({'x': x},)), key(static=(True,)), key(depends_on=(config, nudged)),
             key(depends_on=(other_config, statistics))]
  if len(jax.devices()) > 1:
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
    spread = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.P('data')))
    changed.append(key(args=(spread,)))
  monkeypatch.setattr(executable_cache, 'source_fingerprint', lambda: 'edited')
  changed.append(key())
  assert len(set(changed + [reference])) == len(changed) + 1


def test_the_source_fingerprint_sees_every_python_file(tmp_path):
  (tmp_path / 'sub').mkdir()
  (tmp_path / 'a.py').write_text('x = 1\n')
  (tmp_path / 'sub' / 'b.py').write_text('y = 2\n')
  prints = [executable_cache.fingerprint_of(tmp_path)]
  (tmp_path / 'notes.txt').write_text('not code')
  assert executable_cache.fingerprint_of(tmp_path) == prints[0]
  (tmp_path / 'sub' / 'b.py').write_text('y = 3\n')
  prints.append(executable_cache.fingerprint_of(tmp_path))
  (tmp_path / 'sub' / 'b.py').rename(tmp_path / 'sub' / 'c.py')
  prints.append(executable_cache.fingerprint_of(tmp_path))
  assert len(set(prints)) == 3
  assert executable_cache.source_fingerprint() == executable_cache.fingerprint_of(
      os.path.dirname(executable_cache.__file__))


def _affine(x, w, scale):
  return jnp.tanh(x @ w) * scale


def _unseen_scale() -> float:
  """A static argument no earlier process compiled: JAX's persistent cache (the suite's,
  shared) misses, so XLA compiles and the executable is written."""
  return 1.0 + uuid.uuid4().int % 10**6 / 10**7


def test_an_unreadable_file_is_compiled_again_and_removed(folder, caplog):
  jitted = jax.jit(_affine, static_argnums=2)
  x, w, scale = jnp.ones((3, 4)), jnp.full((4, 2), 0.5), _unseen_scale()
  expected = _affine(x, w, scale)
  np.testing.assert_allclose(executable_cache.CachedProgram(jitted, 'affine', (2,))(x, w, scale),
                             expected, rtol=1e-6)
  [name] = _files(folder, 'affine')
  before = executable_cache.loaded()
  result = executable_cache.CachedProgram(jitted, 'affine', (2,))(x, w, scale)
  assert executable_cache.loaded()[len(before):] == ('affine',)
  np.testing.assert_allclose(result, expected, rtol=1e-6)
  (folder / name).write_bytes(b'not an executable')
  with caplog.at_level(logging.WARNING):
    result = executable_cache.CachedProgram(jitted, 'affine', (2,))(x, w, scale)
  np.testing.assert_allclose(result, expected, rtol=1e-6)
  assert 'cannot be used' in caplog.text
  assert not (folder / name).exists() or (folder / name).read_bytes() != b'not an executable'


def test_only_the_newest_files_of_a_name_are_kept(folder, monkeypatch):
  monkeypatch.setattr(executable_cache, 'KEEP_PER_NAME', 3)
  jitted = jax.jit(_affine, static_argnums=2)
  x, w = jnp.ones((3, 4)), jnp.ones((4, 2))
  program = executable_cache.CachedProgram(jitted, 'affine', (2,))
  for _ in range(executable_cache.KEEP_PER_NAME + 2):
    program(x, w, _unseen_scale())
  assert len(_files(folder, 'affine')) == executable_cache.KEEP_PER_NAME


def test_inside_a_trace_or_without_the_cache_it_is_plain_jit(folder, monkeypatch):
  program = executable_cache.CachedProgram(jax.jit(_affine, static_argnums=2), 'affine', (2,))
  x, w = jnp.ones((3, 4)), jnp.ones((4, 2))
  shape = jax.eval_shape(lambda x: program(x, w, 2.0), x)
  assert shape.shape == (3, 2) and not folder.exists()
  monkeypatch.setattr(executable_cache, 'directory', lambda: None)
  np.testing.assert_allclose(program(x, w, 2.0), _affine(x, w, 2.0), rtol=1e-6)
  assert not folder.exists() and program._cache_size() == 1  # jit's own


if __name__ == '__main__':  # one process of the round trip above
  _three_steps(sys.argv[1])
