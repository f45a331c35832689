"""Shared fixtures: small SynthRooms samples generated once per test session."""
import numpy as np
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
