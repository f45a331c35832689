"""One path from a checkpoint to predictions: `restore_params` reads the parameters alone
(no optimizer, no backbone file), and the packages lean one way (training ← inference ←
jobs). Evaluation, predict and the bundle giving bit-equal results is tested end to end in
test_predict.py (it needs a trained model)."""
import ast
import json
import os

import jax
import numpy as np
import optax
import pytest

from configs import synthetic
from scenediff_jax.benchmark import train_step
from scenediff_jax.inference import restore, trained_model
from scenediff_jax.models import scene_model, shape_autoencoder
from scenediff_jax.training import checkpoints, scene_trainer
from scenediff_jax.training import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, 'scenediff_jax')
IMAGE_SIZE = (48, 64)


def _values(abstract, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), abstract)


@pytest.fixture
def workdir(tmp_path):
  """A workdir as training leaves it (config.json, statistics.json, a scene and a shape
  checkpoint of full train states), with made-up values: the EMA and raw parameters and the
  optimizer state all differ, and the config names a pretrained backbone file that is gone."""
  config = synthetic.get_config('smoke')
  config.training.backbone_weights = str(tmp_path / 'gone' / 'resnet18.npz')
  workdir_lib.write_config(config, str(tmp_path))
  statistics = train_step.plausible_statistics(config)
  statistics = type(statistics)(**{**statistics.__dict__, 'image_size': IMAGE_SIZE,
                                   'shape_step': 20})
  (tmp_path / 'statistics.json').write_text(statistics.to_json())
  scene = scene_model.abstract_params(config, IMAGE_SIZE)
  saved = {'step': np.int32(26), 'params': _values(scene, 1), 'ema_params': _values(scene, 2),
           'opt_state': {'mu': _values(scene, 3), 'count': np.int32(26)}}
  writer = checkpoints.Checkpointer(str(tmp_path / 'checkpoints' / 'scene'))
  writer.save(26, saved)
  writer.close()
  shape = shape_autoencoder.abstract_params(config)
  shape_saved = {'step': np.int32(20), 'params': _values(shape, 4),
                 'opt_state': {'mu': _values(shape, 5)}}
  writer = checkpoints.Checkpointer(str(tmp_path / 'checkpoints' / 'shape'))
  for step in (10, 20):  # the scene model was trained on step 20's autoencoder
    writer.save(step, {**shape_saved, 'params': _values(shape, 4 + (step == 10))})
  writer.close()
  return tmp_path, saved, shape_saved


def test_restore_reads_the_parameters_alone(workdir, monkeypatch):
  path, saved, shape_saved = workdir
  read = []
  original = checkpoints.Checkpointer.restore
  monkeypatch.setattr(checkpoints.Checkpointer, 'restore', lambda self, abstract=None, step=None: (
      read.append(sorted(abstract)) or original(self, abstract, step)))
  # Nothing of training's: no train state, no optimizer, no backbone weights.
  def must_not_run(*args, **kwargs):
    raise AssertionError('restoring for inference built training state')
  for module, name in ((scene_trainer, 'create_state'), (optax, 'adamw'),
                       (scene_trainer.resnet_weights, 'load_into')):
    monkeypatch.setattr(module, name, must_not_run)

  trained = restore.restore_params(str(path))
  assert read == [['ema_params', 'step'], ['params']]  # the optimizer state is never read
  assert trained.step == 26
  for got, want in ((trained.scene, saved['ema_params']), (trained.shape, shape_saved['params'])):
    jax.tree.map(np.testing.assert_array_equal, got, want)
  raw = restore.restore_params(str(path), use_ema=False)
  jax.tree.map(np.testing.assert_array_equal, raw.scene, saved['params'])
  # The whole route to a model that samples needs nothing more.
  model = trained_model.load(str(path))
  inputs = trained_model.batch_inputs([trained_model.model_input(
      np.zeros((*IMAGE_SIZE, 3), np.uint8), np.eye(3), np.eye(3), [[1, 2, 30, 40]], [3],
      model.max_objects)])
  scene = model.sample_scene(inputs, 0, 2, 1.0)
  assert scene['boxes'].shape == (1, model.max_objects, 7)


def test_restore_of_another_config_says_so(workdir):
  path, _, _ = workdir
  config = json.loads((path / 'config.json').read_text())
  config['denoiser']['pose_widths'] = [48, 48]  # not what the checkpoint was trained with
  (path / 'config.json').write_text(json.dumps(config))
  with pytest.raises(restore.ModelError, match='trained with another config'):
    restore.restore_params(str(path))


def test_restore_takes_the_shape_step_the_scene_model_was_trained_on(workdir):
  path, _, shape_saved = workdir
  jax.tree.map(np.testing.assert_array_equal, restore.restore_params(str(path)).shape,
               shape_saved['params'])  # step 20's, not step 10's
  statistics = json.loads((path / 'statistics.json').read_text())
  (path / 'statistics.json').write_text(json.dumps({**statistics, 'shape_step': 30}))
  with pytest.raises(restore.ModelError, match='no longer holds step 30'):
    restore.restore_params(str(path))


def _imports(path):
  """Every module a file imports, at any depth (function-level imports too)."""
  names = []
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names += [node.module] + [f'{node.module}.{a.name}' for a in node.names]
  return names


def _package_imports(package):
  folder = os.path.join(PACKAGE, package)
  return {name: _imports(os.path.join(folder, name))
          for name in sorted(os.listdir(folder)) if name.endswith('.py')}


def _within(name, package):
  return name == f'scenediff_jax.{package}' or name.startswith(f'scenediff_jax.{package}.')


def test_packages_lean_one_way():
  # inference/ uses training/ only for the checkpoint reader, in restore.py.
  for name, imports in _package_imports('inference').items():
    used = {i for i in imports if _within(i, 'training')}
    allowed = ({'scenediff_jax.training', 'scenediff_jax.training.checkpoints'}
               if name == 'restore.py' else set())
    assert used <= allowed, (name, used)
    assert not any(_within(i, 'jobs') for i in imports), name
  # training/ uses neither inference/ nor the jobs above it.
  for name, imports in _package_imports('training').items():
    assert not [i for i in imports if _within(i, 'inference') or _within(i, 'jobs')], name
  # The floors below import none of the three.
  for package in ('geometry', 'models', 'diffusion', 'evaluation'):
    for name, imports in _package_imports(package).items():
      assert not [i for i in imports if any(_within(i, p) for p in
                                            ('training', 'inference', 'jobs'))], (package, name)


def test_the_import_reader_sees_function_level_imports(tmp_path):
  """The check above would pass vacuously if the reader missed imports inside functions."""
  path = tmp_path / 'm.py'
  path.write_text('def f():\n  from scenediff_jax.training import scene_trainer\n'
                  '  import scenediff_jax.jobs.scene_eval\n')
  imports = _imports(str(path))
  assert 'scenediff_jax.training.scene_trainer' in imports
  assert 'scenediff_jax.jobs.scene_eval' in imports


def test_the_bundle_loader_steps_like_the_package():
  """bundle.py runs without the package, so it keeps its own copy of the DDIM steps; the
  package samples with diffusion.ddim_timesteps: the two must agree."""
  from scenediff_jax import diffusion
  from scenediff_jax.inference import bundle
  for steps in (1, 2, 10, 37, 100, 1000):
    np.testing.assert_array_equal(bundle.timesteps(1000, steps),
                                  diffusion.ddim_timesteps(1000, steps))
