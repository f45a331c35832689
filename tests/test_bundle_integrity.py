"""The export bundle's integrity: bundle.json records every file's SHA-256, and loading checks
its fields, the checksums and finite parameters before anything runs. Every damaged bundle
and every path that is no usable model ends predict with exit status 2 and one line, before
any sampling and with nothing written. The cases and what the error line must say come from
docs/robustness.md ("The export bundle").

One bundle of freshly initialised smoke-config parameters is exported per module (no
training); each test tampers with a copy of it."""
import dataclasses
import hashlib
import json
import os
import shutil

import jax
import numpy as np
import pytest
import robustness
from test_predict import predict_in_process, write_demo_folder

from scenediff_jax import predict
from scenediff_jax.benchmark import sampling, train_step
from scenediff_jax.inference import bundle, export, trained_model

IMAGE_SIZE = (48, 64)  # small: the exported functions take any size
PLATFORM = bundle.export_platforms(jax.default_backend())[0]  # only this machine's: cheaper


@pytest.fixture(scope='module')
def fresh():
  """(config, statistics, scene params, shape params) of the smoke config: random values of
  the initialised shapes (jax.eval_shape: nothing compiles; any finite values will do)."""
  from configs import synthetic
  from scenediff_jax.models import scene_model, shape_autoencoder
  config = synthetic.get_config('smoke')
  scene = scene_model.abstract_params(config, IMAGE_SIZE)
  shape = shape_autoencoder.abstract_params(config)
  rng = np.random.default_rng(0)
  fill = lambda x: (0.05 * rng.standard_normal(x.shape)).astype(x.dtype)
  statistics = dataclasses.replace(train_step.plausible_statistics(config), image_size=IMAGE_SIZE)
  return config, statistics, jax.tree.map(fill, scene), jax.tree.map(fill, shape)


@pytest.fixture(scope='module')
def exported(fresh, tmp_path_factory):
  """The intact bundle (never changed: tests tamper with copies)."""
  return export.write_bundle(str(tmp_path_factory.mktemp('bundle') / 'export'), *fresh,
                             platforms=(PLATFORM,))


@pytest.fixture(scope='module')
def demo(tmp_path_factory, scenes):
  folder = tmp_path_factory.mktemp('demo') / 'room'
  write_demo_folder(str(folder), scenes[16])
  return folder


def _copy(exported, tmp_path):
  model = tmp_path / 'export'
  shutil.copytree(exported, model)
  return model


def _files(folder):
  return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- Tampering with a copy of the bundle: one function per row of the table. -----------------

def _sha256(path):
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _edit_metadata(edit):
  def apply(model):
    path = model / bundle.METADATA
    metadata = json.loads(path.read_text())
    edit(metadata)
    path.write_text(json.dumps(metadata))
  return apply


def _edit_params(edit, rehash=False):
  """Rewrites params.npz with edit(flat arrays) applied; `rehash`: and records its new
  checksum, as an exporter that wrote those values would have."""
  def apply(model):
    path = model / bundle.PARAMS
    with np.load(path) as data:
      flat = {k: data[k] for k in data.files}
    kernel = next(k for k in sorted(flat) if k.startswith('scene/') and k.endswith('kernel'))
    flat[kernel] = edit(flat[kernel])
    np.savez(path, **flat)
    if rehash:
      _edit_metadata(lambda m: m['files'].update({bundle.PARAMS: _sha256(path)}))(model)
  return apply


def _truncate(name):
  def apply(model):
    data = (model / name).read_bytes()
    (model / name).write_bytes(data[:len(data) // 2])
  return apply


def _delete(name):
  return lambda model: (model / name).unlink()


def _noise(kernel):
  return kernel + 1e-3 * np.random.default_rng(1).standard_normal(kernel.shape).astype(kernel.dtype)


def _nan(kernel):
  kernel = kernel.copy()
  kernel.flat[0] = np.nan
  return kernel


TAMPERING = {
    'bundle-tampered-kernel': _edit_params(_noise),
    'bundle-nan-parameter': _edit_params(_nan, rehash=True),
    'bundle-truncated-params': _truncate('params.npz'),
    'bundle-missing-params': _delete('params.npz'),
    'bundle-truncated-exported': _truncate('sample_scene.jax_exported'),
    'bundle-missing-exported': _delete('occupancy.jax_exported'),
    'bundle-unlisted-params': _edit_metadata(lambda m: m['files'].pop('params.npz')),
    'bundle-metadata-not-json': _truncate(bundle.METADATA),
    'bundle-metadata-missing-field': _edit_metadata(lambda m: m.pop('num_timesteps')),
    'bundle-metadata-wrong-type': _edit_metadata(lambda m: m.update(image_size=[48, -64])),
    'bundle-metadata-guidance-not-finite': _edit_metadata(
        lambda m: m.update(guidance_scale=float('nan'))),
    'bundle-without-checksums': _edit_metadata(lambda m: m.pop('files')),
}


def _no_sampling(*args, **kwargs):
  raise AssertionError('predict sampled a scene from a model it should have refused')


def _predict_refuses(row, model, demo, tmp_path, capsys, monkeypatch):
  """Runs predict on `model`: the row's exit status and error line, nothing sampled or
  written. Returns the error line."""
  monkeypatch.setattr(predict, 'reconstruct', _no_sampling)
  out = tmp_path / 'out'
  status, err = predict_in_process(capsys, f'--model={model}', f'--input={demo}',
                                   f'--output={out}')
  robustness.check_outcome(row, status, err)
  assert not out.exists()
  return robustness.one_error_line(err, row.program)


@pytest.mark.parametrize(
    'row', robustness.cases(test='test_a_damaged_bundle_is_refused_before_sampling'),
    ids=lambda row: row.id)
def test_a_damaged_bundle_is_refused_before_sampling(row, exported, demo, tmp_path, capsys,
                                                     monkeypatch):
  model = _copy(exported, tmp_path)
  TAMPERING[row.id](model)
  before = _files(model)
  line = _predict_refuses(row, model, demo, tmp_path, capsys, monkeypatch)
  assert '--mode=export' in line  # says how to get a good bundle
  assert _files(model) == before  # the loader leaves the bundle as it found it


# --- Paths that are no usable model. ----------------------------------------------------------

def _workdir(config_text):
  """A workdir whose config.json holds `config_text` (the rest of it looks trained)."""
  def make(tmp_path, exported):
    workdir = tmp_path / 'work'
    (workdir / 'checkpoints' / 'scene').mkdir(parents=True)
    shutil.copyfile(os.path.join(exported, 'statistics.json'), workdir / 'statistics.json')
    (workdir / 'config.json').write_text(config_text)
    return workdir
  return make


MODEL_PATHS = {
    'model-path-is-a-file': lambda tmp_path, exported: _copy(exported, tmp_path) / bundle.METADATA,
    'model-workdir-config-empty': _workdir('{}'),
    'model-workdir-config-not-json': _workdir('{"max_objects": 16, "diffusion": {'),
    'model-workdir-config-no-sections': _workdir('{"max_objects": 16, "diffusion": {}}'),
}


@pytest.mark.parametrize(
    'row', robustness.cases(test='test_a_path_that_is_no_usable_model_is_refused'),
    ids=lambda row: row.id)
def test_a_path_that_is_no_usable_model_is_refused(row, exported, demo, tmp_path, capsys,
                                                   monkeypatch):
  model = MODEL_PATHS[row.id](tmp_path, exported)
  _predict_refuses(row, model, demo, tmp_path, capsys, monkeypatch)


def test_every_case_here_is_a_row_of_the_table():
  for cases, test in ((TAMPERING, 'test_a_damaged_bundle_is_refused_before_sampling'),
                      (MODEL_PATHS, 'test_a_path_that_is_no_usable_model_is_refused')):
    assert set(cases) == {row.id for row in robustness.cases(test=test)}, test


# --- Export and the intact bundle. ------------------------------------------------------------

def test_export_refuses_non_finite_parameters(fresh, tmp_path):
  row = robustness.case('bundle-export-non-finite')
  config, statistics, scene, shape = fresh
  flat = bundle.flatten(scene)
  kernel = next(k for k in sorted(flat) if k.endswith('kernel'))
  flat[kernel] = _nan(flat[kernel])
  with pytest.raises(trained_model.ModelError) as error:
    export.write_bundle(str(tmp_path / 'export'), config, statistics, bundle.unflatten(flat),
                        shape, platforms=(PLATFORM,))
  assert row.names in str(error.value) and kernel in str(error.value)
  assert os.listdir(tmp_path) == []  # no bundle, not even a staging folder


def test_an_intact_bundle_records_every_checksum_loads_and_samples(exported, tmp_path):
  model = _copy(exported, tmp_path)
  files = json.loads((model / bundle.METADATA).read_text())['files']
  expected = ['config.json', 'load_bundle.py', 'params.npz', 'statistics.json',
              *(f'{name}.jax_exported' for name in bundle.FUNCTIONS)]
  assert sorted(files) == sorted(expected) == sorted(set(os.listdir(model)) - {bundle.METADATA})
  assert all(files[name] == _sha256(model / name) for name in files)
  loaded = trained_model.load(str(model))
  assert (loaded.source, loaded.image_size) == ('bundle', IMAGE_SIZE)
  scene = loaded.sample_scene(sampling.scene_inputs(loaded, objects=3), 0, 2, 1.0)
  assert scene['boxes'].shape == (1, loaded.max_objects, 7)
  assert all(np.isfinite(value).all() for value in scene.values())
