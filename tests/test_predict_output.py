"""predict never deletes what is in its output folder, and every failure ends in one line.

The cases and their expected outcomes are rows of docs/robustness.md ("predict: the output
folder and the inputs"); each test here runs the rows that name it. No model is trained: a fake
InferenceModel (boxes in front of the camera, cubes as meshes) stands in for the network, so
that predict's real reading, checking and writing code runs.
"""
import errno
import gc
import json
import os
import subprocess
import sys
import weakref

from absl import flags
import numpy as np
from PIL import Image
import pytest
import robustness
import trimesh

from scenediff_jax import predict
from scenediff_jax.inference import atomic_dir, bundle, demo_input, scene_files, trained_model

REPO = robustness.REPO
IMAGE_SIZE, MAX_OBJECTS = (48, 64), 4  # the fake model's input
OUTPUTS = ('scene.glb', 'boxes.json', 'preview.png')


# --- Helpers: demo folders, a fake model, running predict in process. -----------------------

def write_demo(folder, objects=3, size=(60, 80)):
  """A demo folder of a grey image (H, W) = size and `objects` chair detections."""
  os.makedirs(folder, exist_ok=True)
  h, w = size
  Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(os.path.join(folder, 'img.jpg'))
  focal = 0.8 * w
  np.savetxt(os.path.join(folder, 'cam_K.txt'),
             [[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]])
  step = w / (objects + 1)
  detections = [{'bbox': [step * k + 1, h * 0.3, step * (k + 1) - 1, h * 0.8], 'class': 'chair',
                 'score': 0.9 - 0.01 * k} for k in range(objects)]
  with open(os.path.join(folder, 'detections.json'), 'w') as f:
    json.dump(detections, f)
  return str(folder)


class FakeModel:
  """InferenceModel's interface: boxes in a row 3 m ahead, cubes as meshes."""
  image_size, max_objects = IMAGE_SIZE, MAX_OBJECTS
  num_timesteps, sampling_steps, guidance_scale = 1000, 5, 1.0

  def sample_scene(self, inputs, seed, steps, guidance):
    n = self.max_objects
    boxes = np.zeros((1, n, 7), np.float32)
    boxes[0, :, 0] = np.linspace(-1.0, 1.0, n)
    boxes[0, :, 1:3] = (0.5, 3.0)
    boxes[0, :, 3:6] = 0.5
    return {'boxes': boxes, 'layout': np.array([[0, 0.5, 3, 4, 3, 6, 0]], np.float32),
            'gaussians': np.zeros((1, n, 2, 16), np.float32),
            'intrinsics': np.zeros((1, n, 2, 3), np.float32)}

  def object_meshes(self, gaussians, intrinsics, resolution):
    return [trimesh.creation.box(extents=(0.8, 0.8, 0.8)) for _ in range(len(gaussians))]

  sample_posterior = trained_model.InferenceModel.sample_posterior  # over the boxes above


@pytest.fixture
def model(tmp_path, monkeypatch):
  """A bundle folder with just bundle.json (predict reads the input size from it) whose
  trained_model.load gives a FakeModel."""
  folder = tmp_path / 'model'
  folder.mkdir()
  (folder / bundle.METADATA).write_text(json.dumps({'image_size': list(IMAGE_SIZE),
                                                     'max_objects': MAX_OBJECTS}))
  monkeypatch.setattr(trained_model, 'load', lambda path: FakeModel())
  return str(folder)


def run_predict(capsys, *argv):
  """predict's main in process: (exit status, stderr)."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['predict', *argv])
  try:
    predict.main(['predict'])
    code = 0
  except SystemExit as exit_info:
    code = exit_info.code
  return code, capsys.readouterr().err


def tree(root):
  """{relative path: bytes (files) or None (folders)} of everything under root, hidden too."""
  found = {}
  for folder, dirs, files in os.walk(root):
    for name in dirs:
      found[os.path.relpath(os.path.join(folder, name), root)] = None
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, root)] = f.read()
  return found


def hidden(folder):
  return sorted(n for n in os.listdir(folder) if n.startswith('.'))


def assert_prediction(folder, objects=3):
  names = os.listdir(folder)
  plys = sorted(n for n in names if n.endswith('.ply'))
  assert set(OUTPUTS) <= set(names) and len(plys) == objects, names
  record = json.loads(open(os.path.join(folder, 'boxes.json')).read())
  assert sorted(record['files']) == sorted([*OUTPUTS, *plys])
  assert not [n for n in names if n.startswith(scene_files.STAGING_PREFIX)]


def dead_pid():
  """The pid of a process that has exited and been reaped."""
  child = subprocess.Popen([sys.executable, '-c', 'pass'])
  child.wait()
  return child.pid


def rows(test):
  found = robustness.cases(test=test)
  assert found, f'no row of {robustness.TABLE} names {test}'
  return pytest.mark.parametrize('row', found, ids=[r.id for r in found])


def check_setups(setups, test):
  """Every row naming `test` has a setup here, and every setup a row."""
  assert sorted(setups) == sorted(r.id for r in robustness.cases(test=test))


# --- What is in the output folder stays. ----------------------------------------------------

def _keeps_other_files(tmp):
  demo, out = write_demo(tmp / 'demo'), tmp / 'out'
  (out / '.git').mkdir(parents=True)
  (out / 'notes.txt').write_text('mine')
  (out / '.git' / 'HEAD').write_text('ref')
  return [f'--input={demo}', f'--output={out}'], out, [out], ['notes.txt', '.git/HEAD']


def _folder_keeps_other_files(tmp):
  inputs, out = tmp / 'inputs', tmp / 'out'
  write_demo(inputs / 'r1')
  write_demo(inputs / 'r2', objects=2)
  (out / 'r1').mkdir(parents=True)
  (out / 'summary.csv').write_text('mine')
  (out / 'r1' / 'notes.txt').write_text('mine too')
  return ([f'--input={inputs}', f'--output={out}'], out, [out / 'r1', out / 'r2'],
          ['summary.csv', 'r1/notes.txt'])


def _cwd(tmp):
  demo, work = write_demo(tmp / 'demo'), tmp / 'work'
  work.mkdir()
  (work / 'thesis.tex').write_text('years of work')
  os.chdir(work)  # undone by the test's monkeypatch.chdir
  return [f'--input={demo}', '--output=.'], work, [work], ['thesis.tex']


def _inside_input(tmp):
  demo = tmp / 'demo'
  write_demo(demo)
  out = demo / 'prediction'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  return ([f'--input={demo}', f'--output={out}'], demo, [out],
          ['img.jpg', 'cam_K.txt', 'detections.json', 'prediction/notes.txt'])


KEEPS = {
    'predict-output-keeps-other-files': _keeps_other_files,
    'predict-folder-output-keeps-other-files': _folder_keeps_other_files,
    'predict-output-is-cwd': _cwd,
    'predict-output-inside-input': _inside_input,
}


@rows('test_output_keeps_what_is_there')
def test_output_keeps_what_is_there(row, model, tmp_path, monkeypatch, capsys):
  check_setups(KEEPS, 'test_output_keeps_what_is_there')
  monkeypatch.chdir(tmp_path)
  argv, root, predictions, kept = KEEPS[row.id](tmp_path)
  before = {name: (root / name).read_bytes() for name in kept}
  code, err = run_predict(capsys, f'--model={model}', *argv)
  robustness.check_outcome(row, code, err)
  assert {name: (root / name).read_bytes() for name in kept} == before
  for folder in predictions:
    assert_prediction(folder, objects=2 if folder.name == 'r2' else 3)


# --- An output that would put the results over the inputs, or is not a folder. ------------

def _output_is_input(tmp):
  demo = write_demo(tmp / 'demo')
  return [f'--input={demo}', f'--output={demo}']


def _output_above_input(tmp):
  write_demo(tmp / 'dir' / 'r2')
  (tmp / 'dir' / 'other').mkdir()
  (tmp / 'dir' / 'other' / 'data.bin').write_bytes(b'mine')
  return [f'--input={write_demo(tmp / "dir" / "r1")}', f'--output={tmp / "dir"}']


def _folder_output_is_input(tmp):
  write_demo(tmp / 'dir' / 'r1')
  write_demo(tmp / 'dir' / 'r2')
  return [f'--input={tmp / "dir"}', f'--output={tmp / "dir"}']


def _folder_output_is_one_input(tmp):
  write_demo(tmp / 'dir' / 'r1')
  write_demo(tmp / 'dir' / 'r2')
  return [f'--input={tmp / "dir"}', f'--output={tmp / "dir" / "r1"}']


def _output_is_a_file(tmp):
  (tmp / 'result.txt').write_text('mine')
  return [f'--input={write_demo(tmp / "demo")}', f'--output={tmp / "result.txt"}']


def _output_under_a_file(tmp):
  (tmp / 'result.txt').write_text('mine')
  return [f'--input={write_demo(tmp / "demo")}', f'--output={tmp / "result.txt" / "out"}']


def _output_empty(tmp):
  return [f'--input={write_demo(tmp / "demo")}', '--output=']


REFUSED = {
    'predict-output-is-input': _output_is_input,
    'predict-output-above-input': _output_above_input,
    'predict-folder-output-is-input': _folder_output_is_input,
    'predict-folder-output-is-one-input': _folder_output_is_one_input,
    'predict-output-is-a-file': _output_is_a_file,
    'predict-output-under-a-file': _output_under_a_file,
    'predict-output-empty': _output_empty,
}


@rows('test_output_over_an_input_is_refused')
def test_output_over_an_input_is_refused(row, model, tmp_path, monkeypatch, capsys):
  check_setups(REFUSED, 'test_output_over_an_input_is_refused')
  work = tmp_path / 'work'
  work.mkdir()
  monkeypatch.chdir(work)
  argv = REFUSED[row.id](tmp_path)
  before = tree(tmp_path)

  def must_not_run(*args, **kwargs):
    raise AssertionError('predict read an input or the model before refusing --output')
  monkeypatch.setattr(demo_input, 'read_demo_input', must_not_run)
  monkeypatch.setattr(trained_model, 'load', must_not_run)
  code, err = run_predict(capsys, f'--model={tmp_path / "model"}', *argv)
  robustness.check_outcome(row, code, err)
  assert tree(tmp_path) == before


# --- A second prediction, and what killed runs left. -----------------------------------------

def test_rerun_with_fewer_objects_removes_only_its_own_stale_files(model, tmp_path, capsys):
  row = robustness.case('predict-rerun-fewer-objects')
  demo, out = write_demo(tmp_path / 'demo', objects=4), tmp_path / 'out'
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
  assert code == 0, err
  assert_prediction(out, objects=4)
  (out / 'object_09_chair.ply').write_text('a user\'s own, not in boxes.json')
  write_demo(demo, objects=2)
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
  robustness.check_outcome(row, code, err)
  assert sorted(n for n in os.listdir(out) if n.endswith('.ply')) == [
      'object_00_chair.ply', 'object_01_chair.ply', 'object_09_chair.ply']
  assert (out / 'object_09_chair.ply').read_text() == 'a user\'s own, not in boxes.json'
  assert len(json.loads((out / 'boxes.json').read_text())['objects']) == 2


STAGING_OWNERS = {'predict-staging-dead-owner': (dead_pid, False),
                  'predict-staging-live-owner': (os.getpid, True)}


@rows('test_staging_folders_of_dead_runs_are_removed')
def test_staging_folders_of_dead_runs_are_removed(row, model, tmp_path, capsys):
  check_setups(STAGING_OWNERS, 'test_staging_folders_of_dead_runs_are_removed')
  owner, kept = STAGING_OWNERS[row.id]
  demo, out = write_demo(tmp_path / 'demo'), tmp_path / 'out'
  staging = out / f'{scene_files.STAGING_PREFIX}{owner()}-abc123'
  staging.mkdir(parents=True)
  (staging / 'scene.glb').write_bytes(b'half written')
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
  robustness.check_outcome(row, code, err)
  assert staging.exists() == kept
  assert (out / 'boxes.json').exists()


def test_files_a_killed_run_replaced_are_put_back(tmp_path):
  row = robustness.case('predict-killed-midway-put-back')
  assert row.exit is None
  # Killed in the middle of moving its files in: boxes.json already replaced, preview.png
  # moved aside but its new one not yet in place.
  out = tmp_path / 'out'
  backup = out / f'{scene_files.STAGING_PREFIX}{dead_pid()}-abc123' / scene_files.BACKUP
  backup.mkdir(parents=True)
  (out / 'notes.txt').write_text('mine')
  (out / 'boxes.json').write_text('new')
  (backup / 'boxes.json').write_text('old')
  (backup / 'preview.png').write_text('old preview')
  atomic_dir.remove_dead_staging(str(out), scene_files.STAGING_PREFIX, backup=scene_files.BACKUP)
  assert sorted(os.listdir(out)) == ['boxes.json', 'notes.txt', 'preview.png']
  assert [(out / n).read_text() for n in ('boxes.json', 'preview.png')] == ['old', 'old preview']


def test_atomic_directory_cleans_up_after_dead_runs(tmp_path):
  row = robustness.case('atomic-staging-dead-owner')
  assert row.program == 'sample' and row.exit is None
  dead, live = dead_pid(), os.getpid()
  (tmp_path / 'scene_000').mkdir()
  (tmp_path / 'scene_000' / 'object_00.ply').write_text('old')
  for pid in (dead, live):
    (tmp_path / f'.scene_000.tmp-{pid}-xyz').mkdir()
  # A run killed between renaming scene_001 aside and renaming its new one into place.
  (tmp_path / f'.scene_001.old-{dead}-0123abcd').mkdir()
  (tmp_path / f'.scene_001.old-{dead}-0123abcd' / 'object_00.ply').write_text('only copy')
  for name in ('scene_000', 'scene_002'):
    with atomic_dir.atomic_directory(tmp_path / name) as staging:
      assert os.path.basename(staging).startswith(f'.{name}.tmp-{live}-')
      open(os.path.join(staging, 'object_00.ply'), 'w').write('new')
  assert hidden(tmp_path) == sorted([f'.scene_000.tmp-{live}-xyz',
                                     f'.scene_001.old-{dead}-0123abcd'])
  with atomic_dir.atomic_directory(tmp_path / 'scene_001') as staging:
    # On entry the only copy was put back; on success it is replaced.
    assert (tmp_path / 'scene_001' / 'object_00.ply').read_text() == 'only copy'
    open(os.path.join(staging, 'object_00.ply'), 'w').write('new')
  assert hidden(tmp_path) == [f'.scene_000.tmp-{live}-xyz']
  assert (tmp_path / 'scene_001' / 'object_00.ply').read_text() == 'new'


# --- Write failures: exit 1, one line, the folder as it was. --------------------------------

def _failing_save(code):
  def save(*args, **kwargs):
    raise OSError(code, os.strerror(code))
  return save


def _failing_rename(monkeypatch, after):
  """os.rename failing once, on its `after`-th call into an output folder (not staging)."""
  real, calls = os.rename, []

  def rename(source, target):
    if scene_files.STAGING_PREFIX in os.fspath(source) and '.previous' not in os.fspath(target):
      calls.append(target)
      if len(calls) == after:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    return real(source, target)
  monkeypatch.setattr(os, 'rename', rename)


WRITE_FAILURES = {  # row id: (how writing fails, whether OUT exists before)
    'predict-disk-full': (lambda mp: mp.setattr(Image.Image, 'save', _failing_save(errno.ENOSPC)),
                          True),
    'predict-disk-full-new-output': (
        lambda mp: mp.setattr(Image.Image, 'save', _failing_save(errno.ENOSPC)), False),
    'predict-read-only-disk': (
        lambda mp: mp.setattr(trimesh.Trimesh, 'export', _failing_save(errno.EROFS)), True),
    'predict-permission-denied': (
        lambda mp: mp.setattr(trimesh.Scene, 'export', _failing_save(errno.EACCES)), True),
    'predict-commit-fails-midway': (lambda mp: _failing_rename(mp, after=3), True),
}


@rows('test_write_failure_ends_in_one_line_and_changes_nothing')
def test_write_failure_ends_in_one_line_and_changes_nothing(row, model, tmp_path, monkeypatch,
                                                             capsys):
  check_setups(WRITE_FAILURES, 'test_write_failure_ends_in_one_line_and_changes_nothing')
  fail, previous = WRITE_FAILURES[row.id]
  demo, out = write_demo(tmp_path / 'demo', objects=4), tmp_path / 'out'
  if previous:
    code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
    assert code == 0, err
    (out / 'notes.txt').write_text('mine')
    write_demo(demo, objects=2)  # the failed prediction would also remove two stale PLYs
  before = tree(tmp_path)
  fail(monkeypatch)
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
  robustness.check_outcome(row, code, err)
  assert str(out) in robustness.one_error_line(err, 'predict')
  assert tree(tmp_path) == before


# --- Flags checked before any work. --------------------------------------------------------

PREDICT_FLAGS = {'predict-mesh-resolution-too-high': '--mesh_resolution=512',
                 'predict-mesh-resolution-zero': '--mesh_resolution=0'}


@rows('test_predict_flags_are_checked_before_any_work')
def test_predict_flags_are_checked_before_any_work(row, tmp_path, monkeypatch, capsys):
  check_setups(PREDICT_FLAGS, 'test_predict_flags_are_checked_before_any_work')

  def must_not_run(*args, **kwargs):
    raise AssertionError('predict read the model before checking its flags')
  monkeypatch.setattr(trained_model, 'find_model', must_not_run)
  monkeypatch.setattr(trained_model, 'load', must_not_run)
  demo = write_demo(tmp_path / 'demo')
  code, err = run_predict(capsys, f'--model={tmp_path}', f'--input={demo}',
                          f'--output={tmp_path / "out"}', PREDICT_FLAGS[row.id])
  robustness.check_outcome(row, code, err)
  assert not (tmp_path / 'out').exists()


SAMPLE_FLAGS = {'sample-mesh-resolution-too-high': ['--mesh_resolution=512'],
                'sample-mesh-resolution-zero': ['--mesh_resolution=0'],
                'sample-num-zero': ['--num=0'],
                'sample-objects-zero': ['--objects=0'],
                'sample-objects-above-max': [f'--objects={MAX_OBJECTS + 1}'],
                'sample-output-is-a-file': ['--output={model}/bundle.json']}

# sample's flags clash with predict's (both define --model), so it runs in its own process,
# every case in one, with trained_model.load failing the case if it is reached.
_SAMPLE_CASES = '''
import contextlib, io, json, sys
from absl import flags
from scenediff_jax import sample
from scenediff_jax.inference import trained_model
def load(path):
  raise AssertionError('sample loaded the model before checking its flags')
trained_model.load = load
results = {}
for case, argv in json.loads(sys.argv[1]).items():
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['sample', *argv])
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    try:
      sample.main(['sample'])
      code = 0
    except SystemExit as e:
      code = e.code
  results[case] = [code, err.getvalue()]
print(json.dumps(results))
'''


@pytest.fixture(scope='module')
def sample_results(tmp_path_factory):
  root = tmp_path_factory.mktemp('sample')
  (root / bundle.METADATA).write_text(json.dumps({'image_size': list(IMAGE_SIZE),
                                                  'max_objects': MAX_OBJECTS}))
  cases = {case: [f'--model={root}', f'--output={root / "out"}',
                  *(a.format(model=root) for a in argv)]
           for case, argv in SAMPLE_FLAGS.items()}
  result = subprocess.run([sys.executable, '-c', _SAMPLE_CASES, json.dumps(cases)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert not (root / 'out').exists()
  return json.loads(result.stdout.strip().splitlines()[-1])


@rows('test_sample_flags_are_checked_before_loading')
def test_sample_flags_are_checked_before_loading(row, sample_results):
  check_setups(SAMPLE_FLAGS, 'test_sample_flags_are_checked_before_loading')
  code, err = sample_results[row.id]
  robustness.check_outcome(row, code, err)


# --- Inputs. ---------------------------------------------------------------------------------

def test_deeply_nested_detections_are_bad_input(model, tmp_path, capsys):
  row = robustness.case('predict-detections-nested-deeply')
  demo = write_demo(tmp_path / 'demo')
  with open(os.path.join(demo, 'detections.json'), 'w') as f:
    f.write('[' * 100_000)
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}',
                          f'--output={tmp_path / "out"}')
  robustness.check_outcome(row, code, err)
  assert not (tmp_path / 'out').exists()


BAD_FOLDERS = {  # row id: (flags, which of r1..r4 are bad)
    'predict-folder-some-bad': ([], ('r2', 'r4')),
    'predict-folder-some-bad-strict': (['--strict'], ('r2', 'r4')),
    'predict-folder-all-bad': ([], ('r1', 'r2', 'r3', 'r4')),
}


@rows('test_folder_with_bad_inputs')
def test_folder_with_bad_inputs(row, model, tmp_path, monkeypatch, capsys, caplog):
  check_setups(BAD_FOLDERS, 'test_folder_with_bad_inputs')
  extra, bad = BAD_FOLDERS[row.id]
  inputs, out = tmp_path / 'inputs', tmp_path / 'out'
  for name in ('r1', 'r2', 'r3', 'r4'):
    write_demo(inputs / name)
  with open(inputs / 'r1' / 'detections.json', 'r+') as f:  # a repair, warned about once
    detections = json.load(f) + [{'bbox': [1, 1, 20, 20], 'class': 'picture'}]
    f.seek(0)
    json.dump(detections, f)
  for name in bad:  # two different faults among them
    if name in ('r2', 'r3'):
      (inputs / name / 'cam_K.txt').write_text('1 2 3\n')
    else:
      (inputs / name / 'img.jpg').write_bytes(b'not a jpeg')
  # Each input is read when checked and again when its turn comes, never all at once.
  alive, real_read = [], demo_input.read_demo_input

  def read(*args, **kwargs):
    scene = real_read(*args, **kwargs)
    alive.append(weakref.ref(scene))
    return scene
  monkeypatch.setattr(demo_input, 'read_demo_input', read)
  most_alive, real_reconstruct = [], predict.reconstruct

  def reconstruct(*args, **kwargs):
    gc.collect()
    most_alive.append(sum(r() is not None for r in alive))
    return real_reconstruct(*args, **kwargs)
  monkeypatch.setattr(predict, 'reconstruct', reconstruct)

  caplog.set_level('WARNING')
  code, err = run_predict(capsys, f'--model={model}', f'--input={inputs}', f'--output={out}',
                          *extra)
  robustness.check_outcome(row, code, err)
  line = robustness.one_error_line(err, 'predict')
  warnings = [r.getMessage() for r in caplog.records if 'bad input' in r.getMessage()]
  for name in bad:
    assert f'{name} (' in line, line
    assert len([w for w in warnings if w.startswith(f'{name}: ')]) == 1, warnings
  if 'r1' not in bad:
    assert len([r for r in caplog.records if 'picture' in r.getMessage()]) == 1
  good = [n for n in ('r1', 'r2', 'r3', 'r4') if n not in bad]
  if row.exit == 1:
    assert sorted(os.listdir(out)) == good
    for name in good:
      assert_prediction(out / name)
    assert max(most_alive) <= 1
  else:
    assert not out.exists()


class FailingMeshes(FakeModel):
  """Meshing the first scene raises."""
  calls = 0

  def object_meshes(self, gaussians, intrinsics, resolution):
    FailingMeshes.calls += 1
    if FailingMeshes.calls == 1:
      raise RuntimeError('marching cubes found a NaN')
    return super().object_meshes(gaussians, intrinsics, resolution)


def _disk_full_in_r1(monkeypatch):
  """The real writer, with ENOSPC once it has written r1's meshes (its preview)."""
  failing, real_save, real_write = [], Image.Image.save, scene_files.write_scene

  def save(self, *args, **kwargs):
    if failing:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(self, *args, **kwargs)

  def write(output_dir, **kwargs):
    failing[:] = ['r1'] if os.path.basename(output_dir) == 'r1' else []
    return real_write(output_dir, **kwargs)
  monkeypatch.setattr(Image.Image, 'save', save)
  monkeypatch.setattr(scene_files, 'write_scene', write)


def _meshing_raises_in_r1(monkeypatch):
  FailingMeshes.calls = 0
  monkeypatch.setattr(trained_model, 'load', lambda path: FailingMeshes())


ONE_SCENE_FAILS = {'predict-folder-one-scene-write-fails': _disk_full_in_r1,
                   'predict-folder-one-scene-raises': _meshing_raises_in_r1}


@rows('test_one_scene_failing_stops_no_other')
def test_one_scene_failing_stops_no_other(row, model, tmp_path, monkeypatch, capsys):
  check_setups(ONE_SCENE_FAILS, 'test_one_scene_failing_stops_no_other')
  inputs, out = tmp_path / 'inputs', tmp_path / 'out'
  write_demo(inputs / 'r1')
  write_demo(inputs / 'r2')
  ONE_SCENE_FAILS[row.id](monkeypatch)
  code, err = run_predict(capsys, f'--model={model}', f'--input={inputs}', f'--output={out}')
  robustness.check_outcome(row, code, err)
  line = robustness.one_error_line(err, 'predict')
  assert 'r1 (' in line and 'r2 (' not in line, line
  assert sorted(os.listdir(out)) == ['r2']  # r1's folder, new, is not left behind
  assert_prediction(out / 'r2')


# --- Big inputs. -----------------------------------------------------------------------------

def test_huge_image_gets_a_bounded_preview(model, tmp_path, capsys):
  row = robustness.case('predict-huge-image-preview')
  demo, out = write_demo(tmp_path / 'demo', size=(4000, 6000)), tmp_path / 'out'
  code, err = run_predict(capsys, f'--model={model}', f'--input={demo}', f'--output={out}')
  robustness.check_outcome(row, code, err)
  width, height = Image.open(out / 'preview.png').size
  assert width <= 3 * scene_files.MAX_PANEL_SIZE + 100
  assert height <= scene_files.MAX_PANEL_SIZE + 100
  assert width > 3 * 1000  # downscaled to the cap, not below it
  # boxes.json keeps the original image's K and boxes: only the preview is downscaled.
  record = json.loads((out / 'boxes.json').read_text())
  assert record['K'][0][2] == pytest.approx((6000 - 1) / 2)
