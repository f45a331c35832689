"""`--mode=ablate` (jobs/ablation.py): each variant changes only its own factor, a no-align
variant resumed from its twin's checkpoint ends where training it from scratch ends, and the
command writes the Table 2 report."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from scenediff_jax.jobs import ablation
from scenediff_jax.training import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _flat(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def _changed(name):
  base, other = _flat(synthetic.get_config('default').to_dict()), _flat(
      synthetic.get_config(name).to_dict())
  assert base.keys() <= other.keys()
  return {k for k in other if k not in base or other[k] != base[k]} - {'name'}


def test_each_variant_changes_only_its_own_factor_and_keeps_the_budget():
  assert _changed('full') == set()
  assert _changed('no_isa') == {'denoiser.use_isa'}
  assert _changed('no_joint') == {'training.diffusion_steps', 'training.joint_steps'}
  assert _changed('regression') == {'method', 'diffusion.condition_drop',
                                    'diffusion.guidance_scale', 'eval.num_samples'}
  assert _changed('partial_shapes') == {'training.shape_fraction'}
  assert _changed('partial_shapes_no_align') == {
      'training.shape_fraction', 'training.diffusion_steps', 'training.joint_steps'}
  total = lambda c: c.training.diffusion_steps + c.training.joint_steps
  default = synthetic.get_config('default')
  for name in ablation.VARIANTS:
    config = synthetic.get_config(name)
    assert total(config) == total(default), name  # the same budget
    assert config.training.seed == default.training.seed and config.eval.seed == default.eval.seed
  no_joint = synthetic.get_config('no_joint')
  assert no_joint.training.joint_steps == 0 and not synthetic.get_config('no_isa').denoiser.use_isa
  assert synthetic.get_config('partial_shapes').training.shape_fraction == (
      default.ablation.shape_fraction)
  with pytest.raises(ValueError, match='Unknown ablation variant'):
    ablation.variant(default, 'no_diffusion')


def test_budget_applies_to_training_and_evaluation():
  config = synthetic.get_config('smoke')
  with config.unlocked():
    config.ablation.update(diffusion_steps=7, joint_steps=3, eval_scenes=5)
  budgeted = ablation.budgeted(config)
  assert (budgeted.training.diffusion_steps, budgeted.training.joint_steps) == (7, 3)
  assert budgeted.eval.num_scenes == 5
  no_joint = ablation.variant(budgeted, 'no_joint')
  assert (no_joint.training.diffusion_steps, no_joint.training.joint_steps) == (10, 0)


def test_a_no_align_variant_gets_its_twins_end_of_diffusion_checkpoint(tmp_path):
  state = {'params': {'w': jnp.arange(6.0).reshape(2, 3)}, 'step': jnp.int32(4)}
  twin = tmp_path / 'full'
  saver = checkpoints.Checkpointer(str(twin / 'checkpoints' / 'scene'))
  for step in (2, 4, 6):
    saver.save(step, jax.tree.map(lambda x: x + step, state))
  saver.close()
  shape_stage = tmp_path / 'shape_stage'
  (shape_stage / 'checkpoints' / 'shape' / '1').mkdir(parents=True)
  for name in ablation.SHARED_FILES:
    (shape_stage / name).write_text(name)

  target = tmp_path / 'no_joint'
  assert ablation._seed_workdir(str(target), str(shape_stage), str(twin), 4) == 4
  for name in ablation.SHARED_FILES:
    assert (target / name).read_text() == name
  assert (target / 'checkpoints' / 'shape' / '1').is_dir()
  restored = checkpoints.Checkpointer(str(target / 'checkpoints' / 'scene'))
  assert restored.latest_step == 4  # the end of the diffusion stage, not the twin's last
  np.testing.assert_array_equal(restored.restore()['params']['w'], state['params']['w'] + 4)
  restored.close()
  # A variant that has its own checkpoints keeps them; a missing prefix seeds nothing.
  assert ablation._seed_workdir(str(target), str(shape_stage), str(twin), 2) is None
  assert ablation._seed_workdir(str(tmp_path / 'other'), str(shape_stage), str(twin), 5) is None


def _variant_result(iou, first=None, shared=None):
  metrics = {'iou3d_mean': iou, 'ap3d_15': 2 * iou, 'l_align': 0.5, 'shape_fscore': 40.0,
             'shape_cd': 30.0, 'layout_iou': 45.0, 'num_scenes': 250, 'num_samples': 8,
             'baselines': {'trivial baseline (class means)': {'iou3d_mean': 9.0, 'ap3d_15': 9.5,
                                                              'layout_iou': 42.0}}}
  if first is not None:
    metrics['first_sample'] = {'iou3d_mean': first, 'ap3d_15': 2 * first, 'layout_iou': 40.0}
  return {'metrics': metrics, 'per_class_ap3d': {}, 'shared_steps_from': shared,
          'train_wall_seconds': 60.0, 'train_cpu_seconds': 120.0,
          'eval_wall_seconds': 30.0, 'eval_cpu_seconds': 45.0}


def test_report_has_table_2s_rows_in_the_papers_order():
  results = {'config': 'synthetic_default', 'command': 'python -m scenediff_jax.main --mode=ablate',
             'budget': {'diffusion_steps': 1600, 'joint_steps': 300, 'eval_scenes': 250,
                        'shape_fraction': 0.1}, 'batch_size': 16, 'machine': 'x86_64, 2 cores',
             'date': '2026-11-26', 'shape_stage': {'cpu_seconds': 600.0},
             'variants': {'full': _variant_result(20.0, 17.0),
                          'no_joint': _variant_result(19.0, 16.0,
                                                      {'variant': 'full', 'steps': 1600}),
                          'no_isa': _variant_result(15.0, 12.0),
                          'regression': _variant_result(12.0),
                          'partial_shapes': _variant_result(18.0, 15.0),
                          'partial_shapes_no_align': _variant_result(
                              17.0, 14.0, {'variant': 'partial_shapes', 'steps': 1600})}}
  text = ablation.markdown(results)
  rows = [line for line in text.splitlines() if line.startswith('| ') and '---' not in line]
  table2 = [r.split(' | ')[0][2:] for r in rows[1:6]]
  assert table2 == ['regression', 'no_isa', 'no_joint', 'full', 'trivial baseline (class means)']
  regression = rows[1].split(' | ')
  assert regression[1:4] == ['✗', '✓', '✓']
  assert regression[4] == '12.00' and regression[5] == '24.00'
  assert '= K-sample' in rows[1] and '17.00 / 34.00' in rows[4]
  assert '2.0 (+ 1600 steps of full)' in rows[3] and 'Shapes known for 10%' in text
  partial = [r for r in rows if r.startswith('| partial_shapes')]
  assert [r.split(' | ')[1] for r in partial] == ['10%', '10%']
  assert [r.split(' | ')[2] for r in partial] == ['✗', '✓']


@pytest.mark.slow
def test_ablate_mode_trains_both_twins_and_matches_a_run_from_scratch(tmp_path):
  """The smoke ablation of `full` and `no_joint`: no_joint resumes from full's step-20
  checkpoint and must end bit-equal to a no_joint trained from scratch; a rerun redoes
  nothing."""
  work, scratch = tmp_path / 'ablation', tmp_path / 'scratch'
  common = [sys.executable, '-m', 'scenediff_jax.main', '--config=configs/synthetic.py:smoke',
            f'--config.data_dir={tmp_path / "tfds"}', '--config.ablation.eval_scenes=2',
            '--config.eval.num_samples=2', '--config.eval.mesh_objects=1',
            '--config.eval.num_previews=0']
  run = lambda *extra: subprocess.run(common + list(extra), cwd=REPO, capture_output=True,
                                      text=True, timeout=900, env=dict(os.environ))
  ablate = lambda: run('--mode=ablate', f'--workdir={work}',
                       "--config.ablation.variants=('full','no_joint')")
  first = ablate()
  assert first.returncode == 0, first.stderr[-3000:]
  results = json.loads((work / 'ablation.json').read_text())
  assert set(results['variants']) == {'full', 'no_joint'}
  assert results['variants']['no_joint']['shared_steps_from'] == {'variant': 'full', 'steps': 20}
  for name, variant in results['variants'].items():
    assert variant['metrics']['num_scenes'] == 2 and variant['metrics']['step'] == 26, name
    assert variant['metrics']['first_sample']['iou3d_mean'] is not None
  report = (work / 'ablation.md').read_text()
  assert '| no_joint | ✓ | ✓ | ✗ |' in report and '| full | ✓ | ✓ | ✓ |' in report

  # no_joint from scratch, on the same shape stage: the same parameters, bit for bit.
  scratch.mkdir()
  for name in ablation.SHARED_FILES:
    (scratch / name).write_bytes((work / 'shape_stage' / name).read_bytes())
  shutil.copytree(work / 'shape_stage' / 'checkpoints', scratch / 'checkpoints')
  alone = run('--mode=train', f'--workdir={scratch}', '--config.training.diffusion_steps=26',
              '--config.training.joint_steps=0')
  assert alone.returncode == 0, alone.stderr[-3000:]
  restore = lambda d: checkpoints.Checkpointer(str(d / 'checkpoints' / 'scene')).restore()
  resumed, from_scratch = restore(work / 'no_joint'), restore(scratch)
  assert int(resumed['step']) == int(from_scratch['step']) == 26
  for a, b in zip(jax.tree.leaves(resumed['params']), jax.tree.leaves(from_scratch['params'])):
    np.testing.assert_array_equal(a, b)

  again = ablate()  # every variant is done: nothing is trained or evaluated again
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'full is done' in again.stderr and 'no_joint is done' in again.stderr
  assert json.loads((work / 'ablation.json').read_text()) == results
