"""Shared fixtures: small SynthRooms samples generated once per test session, and one JAX
compilation cache for every subprocess the tests start."""
import os

import pytest

from data_pipelines.synth_rooms.scene import SceneConfig, generate_scene

TEST_SCENES = SceneConfig(seed=0, shapes_per_class_train=4, shapes_per_class_test=2)


@pytest.fixture(scope='session')
def scene_config():
  return TEST_SCENES


@pytest.fixture(scope='session')
def scenes():
  bank = TEST_SCENES.bank()
  return ([generate_scene(TEST_SCENES, 'train', i, bank) for i in range(16)] +
          [generate_scene(TEST_SCENES, 'test', i, bank) for i in range(6)])


@pytest.fixture(scope='session', autouse=True)
def shared_compilation_cache(tmp_path_factory):
  """Several end-to-end tests train the same smoke model in subprocesses: with one
  persistent cache they compile its programs once (the suite's time budget needs it).
  pytest-xdist's workers share it too (their base temp dirs have one parent); a size limit
  turns on JAX's file lock, so no process reads an entry another is still writing."""
  if os.environ.get('PYTEST_XDIST_WORKER'):
    cache = tmp_path_factory.getbasetemp().parent / 'jax_cache'
    cache.mkdir(exist_ok=True)
  else:
    cache = tmp_path_factory.mktemp('jax_cache')
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', str(cache))
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(8 << 30))
