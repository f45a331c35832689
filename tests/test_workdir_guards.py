"""The main job never loses or silently changes what a workdir holds: bad configs stop before
anything is written, config.json changes only for an accepted run, one training at a time,
unreadable checkpoints are never deleted, derived files follow the stage they come from.
Expectations come from docs/robustness.md (tests/robustness.py)."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from absl import flags
import numpy as np
import pytest
import robustness

from scenediff_jax.geometry.normalization import ShapeLatents

REPO = robustness.REPO
SMOKE = f'--config={os.path.join(REPO, "configs", "synthetic.py")}:smoke'
# A few steps of every stage, with two checkpoints each (steps 2 and 4).
BUDGET = ('--config.shape_training.steps=4', '--config.shape_training.checkpoint_every=2',
          '--config.training.diffusion_steps=4', '--config.training.joint_steps=0',
          '--config.training.checkpoint_every=2')


def run_main(*args, env=None, code=None, timeout=900):
  """`python -m scenediff_jax.main ARGS` (or `code` run as the program), in a subprocess."""
  command = ['-m', 'scenediff_jax.main'] if code is None else ['-c', code]
  return subprocess.run([sys.executable, *command, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env={**os.environ, **(env or {})})


def main_in_process(capsys, *argv):
  """(exit status, stderr) of the main job run in this process."""
  from scenediff_jax import main
  flags.FLAGS.unparse_flags()
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:  # defined by each parse
    delattr(flags.FLAGS, name)
  # Other programs' required flags, defined in this process by other tests' imports.
  others = [f'--{name}=unused' for name in ('model', 'input', 'output') if name in flags.FLAGS]
  saved_argv, sys.argv = sys.argv, ['main', *argv, *others]  # the config flag reads sys.argv
  try:
    main.parse_flags(sys.argv)
    main.run(flags.FLAGS.config, flags.FLAGS.workdir, flags.FLAGS.mode)
    status = 0
  except SystemExit as stop:
    status = stop.code
  finally:
    sys.argv = saved_argv
  return status, capsys.readouterr().err


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(common flags, workdir) of a smoke model trained a few steps through the main job."""
  root = tmp_path_factory.mktemp('guards')
  common = [SMOKE, f'--config.data_dir={root / "tfds"}', *BUDGET]
  work = root / 'work'
  result = run_main(*common, f'--workdir={work}', '--mode=train')
  assert result.returncode == 0, result.stderr[-3000:]
  return common, work


@pytest.fixture
def workdir(trained, tmp_path):
  """A copy of the trained workdir, free to damage."""
  common, work = trained
  copy = tmp_path / 'work'
  shutil.copytree(work, copy)
  return common, copy


def tree(path):
  """{relative path: bytes} of every file under `path`: to see that nothing changed."""
  files = {}
  for folder, _, names in os.walk(path):
    for name in names:
      full = os.path.join(folder, name)
      with open(full, 'rb') as f:
        files[os.path.relpath(full, path)] = f.read()
  return files


# --- Bad configs: one line, exit 2, before anything is built, trained or written. -----------

BAD_CONFIGS = {
    'main-misspelt-field': ('--config.training.diffusion_stepz=4',),
    'main-unknown-variant': (SMOKE[:-len('smoke')] + 'smok',),
    'main-missing-config-file': (SMOKE.replace('synthetic.py', 'synthtic.py'),),
    'main-wrong-type': ('--config.training.batch_size=abc',),
    'main-zero-steps': ('--config.training.diffusion_steps=0',),
    'main-negative-steps': ('--config.shape_training.steps=-3',),
    'main-zero-batch': ('--config.training.batch_size=0',),
    'main-zero-checkpoint-every': ('--config.training.checkpoint_every=0',),
    'main-zero-eval-batch': ('--mode=eval', '--config.eval.batch_size=0'),
    'main-zero-samples': ('--mode=eval', '--config.eval.num_samples=0'),
    'main-bad-mesh-resolution': ('--config.eval.mesh_resolution=48',),
    'main-bad-eval-split': ('--mode=eval', '--config.eval.split=tset'),
}


@pytest.mark.parametrize('row', robustness.cases(test='test_bad_config_exits_2_before_anything'),
                         ids=lambda row: row.id)
def test_bad_config_exits_2_before_anything(row, workdir, capsys):
  common, work = workdir
  before = tree(work)
  status, err = main_in_process(capsys, *common, f'--workdir={work}', *BAD_CONFIGS[row.id])
  robustness.check_outcome(row, status, err)
  assert tree(work) == before


def test_batches_that_do_not_split_over_8_devices(trained, tmp_path):
  common, _ = trained
  row = robustness.case('main-batch-not-divisible')
  work = tmp_path / 'new'
  result = run_main(SMOKE, *common[1:2], f'--workdir={work}',
                    env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}, timeout=300)
  robustness.check_outcome(row, result.returncode, result.stderr)
  assert 'multiple of 8' in result.stderr
  assert not work.exists()


def test_workdir_that_is_a_file_or_read_only(trained, tmp_path, capsys):
  common, _ = trained
  row = robustness.case('main-workdir-is-file')
  a_file = tmp_path / 'notes.txt'
  a_file.write_text('mine')
  status, err = main_in_process(capsys, *common, f'--workdir={a_file}')
  robustness.check_outcome(row, status, err)
  assert a_file.read_text() == 'mine'

  # Root writes through permissions: an immutable folder is read-only even for root.
  row = robustness.case('main-workdir-read-only')
  locked = tmp_path / 'read_only'
  locked.mkdir()
  subprocess.run(['chattr', '+i', str(locked)], check=True)
  try:
    result = run_main(*common, f'--workdir={locked / "work"}', timeout=300)
  finally:
    subprocess.run(['chattr', '-i', str(locked)], check=True)
  robustness.check_outcome(row, result.returncode, result.stderr)
  assert os.listdir(locked) == []


def test_eval_and_export_need_a_trained_workdir(trained, tmp_path, capsys):
  common, _ = trained
  row = robustness.case('main-eval-empty-workdir')
  new, empty = tmp_path / 'new', tmp_path / 'empty'
  empty.mkdir()
  for work in (new, empty):
    status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=eval')
    robustness.check_outcome(row, status, err)
  assert not new.exists() and os.listdir(empty) == []

  row = robustness.case('main-export-empty-workdir')
  (empty / 'config.json').write_text('{}')
  status, err = main_in_process(capsys, *common, f'--workdir={empty}', '--mode=export')
  robustness.check_outcome(row, status, err)
  assert os.listdir(empty) == ['config.json']


# --- config.json, the lock. ------------------------------------------------------------------

def test_a_config_that_changes_the_model_is_refused_and_config_json_kept(workdir, capsys):
  common, work = workdir
  before = tree(work)
  row = robustness.case('main-resume-other-width')
  status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train',
                                '--config.training.diffusion_steps=6',
                                '--config.denoiser.shape_width=64')
  robustness.check_outcome(row, status, err)
  assert '32 → 64' in err
  assert tree(work) == before

  row = robustness.case('main-export-other-variant')
  default = SMOKE[:-len('smoke')] + 'default'
  status, err = main_in_process(capsys, default, *common[1:2], f'--workdir={work}',
                                '--mode=export')
  robustness.check_outcome(row, status, err)
  assert tree(work) == before

  # A new budget is accepted (and recorded): only the model and data fields must match.
  status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train',
                                '--config.training.log_every=7')
  assert status == 0, err[-3000:]
  assert json.loads((work / 'config.json').read_text())['training']['log_every'] == 7


_HOLD_LOCK = """
import sys, time
from scenediff_jax.training import workdir
with workdir.WorkdirLock(sys.argv[1], 'train'):
  print('HELD', flush=True)
  time.sleep(120)
"""


def test_a_second_training_stops_at_the_lock(workdir, capsys):
  from scenediff_jax.training import workdir as workdir_lib
  common, work = workdir
  holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, str(work)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'HELD'
    before = tree(work)
    row = robustness.case('main-second-training')
    status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train')
    robustness.check_outcome(row, status, err)
    assert f'process {holder.pid} on ' in err
    assert tree(work) == before
  finally:
    holder.kill()  # SIGKILL: no clean-up of its own
    holder.wait()
  # Its process is gone, and the kernel released its lock: the next training takes it.
  row = robustness.case('main-stale-lock')
  status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train')
  robustness.check_outcome(row, status, err)
  assert (work / workdir_lib.LOCK_FILE).read_text() == ''  # released at the end


def test_the_lock_is_exclusive_and_released(tmp_path):
  from scenediff_jax.training import workdir as workdir_lib
  with workdir_lib.WorkdirLock(str(tmp_path), 'train'):
    with pytest.raises(workdir_lib.WorkdirLocked, match=f'process {os.getpid()} '):
      with workdir_lib.WorkdirLock(str(tmp_path), 'eval'):
        pass
  with workdir_lib.WorkdirLock(str(tmp_path), 'train'):  # free again
    pass


def test_model_and_data_differences_name_each_field():
  from scenediff_jax.training import workdir as workdir_lib
  old = {'denoiser': {'num_heads': 2}, 'training': {'diffusion_steps': 4},
         'diffusion': {'num_timesteps': 1000, 'eta': 1.0}, 'data': {'seed': 0}}
  new = {'denoiser': {'num_heads': 4}, 'training': {'diffusion_steps': 8},
         'diffusion': {'num_timesteps': 1000, 'eta': 0.0}, 'data': {'seed': 0, 'size': 'tiny'}}
  # data.size is new (absent from the old file): not a difference; a field dropped is one.
  assert workdir_lib.model_and_data_differences(new, old) == ['denoiser.num_heads: 2 → 4']
  assert workdir_lib.model_and_data_differences(old, new) == [
      'data.size: tiny → (absent)', 'denoiser.num_heads: 4 → 2']


def test_every_config_variant_passes_the_checks():
  """The checks refuse values that cannot work, not the configs we ship."""
  from scenediff_jax.jobs import ablation
  from scenediff_jax.training import config_checks
  variants = {'synthetic': ('default', 'smoke', 'paper', 'paper_recipe', *ablation.VARIANTS),
              'sunrgbd': ('default', 'smoke', 'paper_recipe'),
              'pix3d': ('default', 'smoke', 'paper_recipe')}
  for name, names in variants.items():
    spec = importlib.util.spec_from_file_location(f'config_{name}',
                                                  os.path.join(REPO, 'configs', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for variant in names:
      config_checks.check(module.get_config(variant))


# --- Checkpoints and derived files. ----------------------------------------------------------

def _hide_arrays(work, step):
  """Makes checkpoint `step` unreadable the way a moved folder does; returns where its
  arrays went (to check nothing else touched them)."""
  arrays = work / 'checkpoints' / 'scene' / str(step) / 'default' / 'ocdbt.process_0'
  hidden = work.parent / 'hidden_arrays'
  shutil.move(arrays, hidden)
  return hidden


def test_read_only_modes_leave_unreadable_checkpoints_in_place(workdir, scenes, tmp_path, capsys):
  common, work = workdir
  hidden = _hide_arrays(work, 4)
  before = tree(work)
  for case_id, mode in (('main-eval-unreadable-checkpoint', 'eval'),
                        ('main-export-unreadable-checkpoint', 'export')):
    status, err = main_in_process(capsys, *common, f'--workdir={work}', f'--mode={mode}')
    robustness.check_outcome(robustness.case(case_id), status, err)
    assert 'Checkpoint 4' in err
    assert tree(work) == before

  code, err = _predict_in_process(capsys, work, scenes, tmp_path)
  robustness.check_outcome(robustness.case('predict-unreadable-checkpoint'), code, err)
  assert tree(work) == before and hidden.is_dir()


def _predict_in_process(capsys, work, scenes, tmp_path):
  """(exit status, stderr) of predict on one demo folder with the workdir as the model."""
  from scenediff_jax import predict
  from scenediff_jax.inference import demo_input
  demo = tmp_path / 'demo'
  demo_input.write_demo_folder(str(demo), scenes[16], (96, 128))
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['predict', f'--model={work}', f'--input={demo}', f'--output={tmp_path / "out"}'])
  with pytest.raises(SystemExit) as stop:
    predict.main(['predict'])
  return stop.value.code, capsys.readouterr().err


def test_training_moves_an_unreadable_checkpoint_aside(workdir):
  common, work = workdir
  _hide_arrays(work, 4)
  row = robustness.case('main-train-moves-unreadable-aside')
  result = run_main(*common, f'--workdir={work}', '--mode=train',
                    '--config.training.diffusion_steps=6', '--config.training.log_every=1')
  robustness.check_outcome(row, result.returncode, result.stderr)
  assert 'moved it to' in result.stderr
  aside = os.listdir(work / 'checkpoints' / 'scene.unreadable')
  assert len(aside) == 1 and aside[0].startswith('4-')
  assert sorted(os.listdir(work / 'checkpoints' / 'scene')) == ['2', '4', '6']  # 4 trained again
  # Step 4 was logged by the first run and again after resuming from 2: it is there once.
  robustness.case('main-metrics-no-duplicates')
  with open(work / 'logs' / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert steps == [3, 4, 5, 6], steps


def test_unreadable_shape_checkpoints_stop_without_retraining(workdir, scenes, tmp_path, capsys):
  common, work = workdir
  arrays = work / 'checkpoints' / 'shape' / '4' / 'default' / 'ocdbt.process_0'
  shutil.move(arrays, work.parent / 'hidden_shape_arrays')
  before = tree(work)
  # Training must not retrain the autoencoder under a trained scene model.
  row = robustness.case('main-unreadable-shape-checkpoint')
  status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train')
  robustness.check_outcome(row, status, err)
  assert tree(work) == before and not (work / 'checkpoints' / 'shape.unreadable').exists()
  code, err = _predict_in_process(capsys, work, scenes, tmp_path)
  robustness.check_outcome(robustness.case('predict-unreadable-shape-checkpoint'), code, err)
  assert tree(work) == before


def test_raising_shape_steps_under_a_trained_scene_model_stops(workdir, capsys):
  common, work = workdir
  before = tree(work)
  row = robustness.case('main-raise-shape-steps')
  status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train',
                                '--config.shape_training.steps=6')
  robustness.check_outcome(row, status, err)
  assert tree(work) == before  # the autoencoder was not trained on


def _smoke_config(data_dir, **shape_training):
  spec = importlib.util.spec_from_file_location('synthetic_config',
                                                os.path.join(REPO, 'configs', 'synthetic.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('smoke')
  config.data_dir = str(data_dir)
  config.shape_training.update(shape_training)
  return config


def test_latents_and_statistics_follow_the_shape_step(trained, tmp_path):
  from scenediff_jax.training import pipeline
  robustness.case('main-stale-latents-rebuilt')
  common, work = trained
  data_dir = common[1].split('=', 1)[1]
  new = tmp_path / 'work'
  shutil.copytree(work / 'checkpoints' / 'shape', new / 'checkpoints' / 'shape')
  first = pipeline.prepare(_smoke_config(data_dir, steps=4, checkpoint_every=2), str(new))
  assert first.latents.shape_step == first.statistics.shape_step == 4
  again = pipeline.prepare(_smoke_config(data_dir, steps=6, checkpoint_every=2), str(new))
  saved = ShapeLatents.load(str(new / 'shape_latents.npz'))
  statistics = json.loads((new / 'statistics.json').read_text())
  assert saved.shape_step == statistics['shape_step'] == again.latents.shape_step == 6
  # Encoded by the autoencoder trained on, not kept from before.
  assert not np.allclose(saved.gaussians, first.latents.gaussians)
  np.testing.assert_allclose(statistics['gaussians']['mean'],
                             again.statistics.gaussians.mean, rtol=1e-6)
  assert not np.allclose(again.statistics.gaussians.mean, first.statistics.gaussians.mean)


def test_corrupt_derived_files(workdir, capsys):
  common, work = workdir
  for case_id, name, junk in (('main-corrupt-statistics', 'statistics.json', '{"pose": [1, 2'),
                              ('main-corrupt-latents', 'shape_latents.npz', 'not a zip file')):
    original = (work / name).read_bytes()
    (work / name).write_text(junk)
    status, err = main_in_process(capsys, *common, f'--workdir={work}', '--mode=train')
    robustness.check_outcome(robustness.case(case_id), status, err)
    assert 'delete it' in err
    assert (work / name).read_text() == junk  # the user's file is theirs to look at
    (work / name).write_bytes(original)


def test_damaged_dataset_shards(trained, tmp_path, capsys):
  common, _ = trained
  data_dir = tmp_path / 'tfds'
  shutil.copytree(common[1].split('=', 1)[1], data_dir)
  shards = sorted(str(p) for p in data_dir.glob('synth_rooms/*/*/*.array_record-*'))
  for case_id, damage in (('main-truncated-shard', lambda p: os.truncate(p, 1000)),
                          ('main-missing-shard', os.remove)):
    damage(shards.pop())
    status, err = main_in_process(capsys, SMOKE, f'--config.data_dir={data_dir}',
                                  f'--workdir={tmp_path / "work"}')
    robustness.check_outcome(robustness.case(case_id), status, err)
    assert 'build it again' in err and not (tmp_path / 'work').exists()


_FULL_DISK = '''
import errno, sys
from absl import app
from scenediff_jax.training import checkpoints
def save(self, step, state, force=False):
  raise OSError(errno.ENOSPC, 'No space left on device', self.directory)
checkpoints.Checkpointer.save = save
from scenediff_jax import main
sys.argv[0] = 'main'
app.run(main.main, flags_parser=main.parse_flags)
'''


def test_a_full_disk_at_a_checkpoint(workdir):
  common, work = workdir
  row = robustness.case('main-disk-full-at-checkpoint')
  result = run_main(*common, f'--workdir={work}', '--mode=train',
                    '--config.training.diffusion_steps=6', code=_FULL_DISK)
  robustness.check_outcome(row, result.returncode, result.stderr)
  assert str(work / 'checkpoints' / 'scene') in result.stderr
  assert sorted(os.listdir(work / 'checkpoints' / 'scene')) == ['2', '4']
  assert (work / '.lock').read_text() == ''  # released


def test_a_resumed_log_has_each_step_once(tmp_path):
  from scenediff_jax.training.metric_log import MetricLog
  robustness.case('main-metrics-no-duplicates')
  log = MetricLog(str(tmp_path), 'metrics.jsonl')
  for step in (5, 10, 15):
    log.write(step, {'loss': step})
  with open(log.path, 'a') as f:
    f.write('{"step": 20, "lo')  # killed mid-line
  # Resumed from the checkpoint of step 10: steps 15 and 20 are trained (and logged) again.
  resumed = MetricLog(str(tmp_path), 'metrics.jsonl', start_step=10)
  for step in (15, 20):
    resumed.write(step, {'loss': step + 0.5})
  with open(log.path) as f:
    lines = [json.loads(line) for line in f]
  assert [l['step'] for l in lines] == [5, 10, 15, 20]
  assert [l['loss'] for l in lines] == [5, 10, 15.5, 20.5]


def _save_unscanned(directory):
  """Rewrites every checkpoint in `directory` as the code before the scan saved them: each
  repeated layer on its own (models/layer_stacks.py)."""
  import orbax.checkpoint as ocp

  from scenediff_jax.models import layer_stacks
  from scenediff_jax.training import checkpoints
  for step in sorted(int(name) for name in os.listdir(directory) if name.isdigit()):
    reader = ocp.PyTreeCheckpointer()
    saved = reader.restore(os.path.join(directory, str(step), 'default'))
    reader.close()
    shutil.rmtree(os.path.join(directory, str(step)))
    writer = checkpoints.Checkpointer(str(directory))
    writer.save(step, layer_stacks.unstack(saved))
    writer.close()


def test_a_workdir_saved_before_the_scan_restores_and_trains_on(trained, workdir):
  import orbax.checkpoint as ocp

  from scenediff_jax.inference.restore import restore_params
  from scenediff_jax.models import layer_stacks
  row = robustness.case('main-train-resumes-unscanned-checkpoint')
  scanned = restore_params(str(trained[1]))
  common, work = workdir
  scene = work / 'checkpoints' / 'scene'
  _save_unscanned(scene)
  metadata = lambda step: ocp.PyTreeCheckpointer().metadata(
      str(scene / str(step) / 'default')).item_metadata
  assert layer_stacks.is_unrolled(metadata(4).tree, {'params': scanned.scene})
  # Read-only (eval, export, predict): the same parameters, the checkpoint left as it is.
  before = tree(work)
  unscanned = restore_params(str(work))
  assert unscanned.step == 4
  assert jax_equal(unscanned.scene, scanned.scene)
  assert tree(work) == before
  # Training resumes from it and saves the scanned layout.
  result = run_main(*common, f'--workdir={work}', '--mode=train',
                    '--config.training.diffusion_steps=6')
  robustness.check_outcome(row, result.returncode, result.stderr)
  assert sorted(os.listdir(scene)) == ['4', '6']  # the smoke config keeps two
  assert not layer_stacks.is_unrolled(metadata(6).tree, {'params': scanned.scene})
  assert layer_stacks.is_unrolled(metadata(4).tree, {'params': scanned.scene})


def jax_equal(a, b):
  import jax
  return (jax.tree.structure(a) == jax.tree.structure(b) and
          all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))
