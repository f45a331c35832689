"""`--mode=ablate`: the paper's ablation (PAPER.md, Table 2) and a partial-shape experiment on
the config's data; writes DIR/ablation.md and DIR/ablation.json.

Each variant is the full model less one thing:
  full         the config as it is
  no_joint     no L_align fine-tuning: its steps train the denoising losses alone
  no_isa       no Intra-Scene Attention: objects never see each other
  regression   the same networks predict x₀ in one forward pass (diffusion/regression.py)
and, with shape ground truth for only `ablation.shape_fraction` of the training scenes (the
rest have depth and masks only, like SUN RGB-D):
  partial_shapes           with the joint L_align stage
  partial_shapes_no_align  without it

Every variant gets the same budget (config.ablation's steps) and seeds and is scored on the
same `ablation.eval_scenes` scenes. Work that is provably the same is done once: the shape
autoencoder, latents and statistics (DIR/shape_stage), and the diffusion stage of a no-align
variant, which starts from its align twin's checkpoint at the end of that stage (up to there
both runs are the same computation: seeds, batches and learning-rate schedule). Finished
variants are kept in ablation.json, so an interrupted ablation resumes where it stopped.
"""
import json
import os
import platform
import shutil
import sys
import time

from absl import logging

VARIANTS = ('full', 'no_joint', 'no_isa', 'regression', 'partial_shapes',
            'partial_shapes_no_align')
# A no-align variant and the variant whose diffusion stage it shares.
ALIGN_TWIN = {'no_joint': 'full', 'partial_shapes_no_align': 'partial_shapes'}
# Table 2's rows in the paper's order: (variant, diffusion, ISA, joint L_align).
TABLE2_ROWS = (('regression', False, True, True), ('no_isa', True, False, True),
               ('no_joint', True, True, False), ('full', True, True, True))
PARTIAL_ROWS = ('partial_shapes_no_align', 'partial_shapes', 'full')
SHARED_FILES = ('shape_latents.npz', 'statistics.json')


def variant(config, name: str):
  """A copy of `config` as ablation variant `name`, with the same budget and seeds."""
  if name not in VARIANTS:
    raise ValueError(f'Unknown ablation variant {name!r}; use one of {", ".join(VARIANTS)}.')
  config = config.copy_and_resolve_references()
  with config.unlocked():
    t = config.training
    if name in ('no_joint', 'partial_shapes_no_align'):  # the joint steps, without L_align
      t.diffusion_steps, t.joint_steps = t.diffusion_steps + t.joint_steps, 0
    if name.startswith('partial_shapes'):
      t.shape_fraction = config.ablation.shape_fraction
    if name == 'no_isa':
      config.denoiser.use_isa = False
    if name == 'regression':
      config.method = 'regression'
      config.diffusion.condition_drop = 0.0  # no null condition: nothing samples it
      config.diffusion.guidance_scale = 1.0  # ... so no guidance either
      config.eval.num_samples = 1  # one deterministic pass: K copies would agree
    config.name = f'{config.name}_{name}'
  return config


def budgeted(config):
  """`config` with the ablation's budget: its steps and its number of eval scenes."""
  config = config.copy_and_resolve_references()
  a = config.ablation
  with config.unlocked():
    config.training.diffusion_steps, config.training.joint_steps = a.diffusion_steps, a.joint_steps
    config.eval.num_scenes = a.eval_scenes
  return config


def _copy_missing(source, target):
  """Copies file or directory `source` to `target` unless `target` exists."""
  if os.path.exists(target) or not os.path.exists(source):
    return
  os.makedirs(os.path.dirname(target), exist_ok=True)
  (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, target)


def _seed_workdir(workdir, shape_stage, twin_dir, prefix_step):
  """Gives a variant's workdir the shared shape stage and, for a no-align variant whose twin
  has its end-of-diffusion checkpoint, that checkpoint to resume from."""
  _copy_missing(os.path.join(shape_stage, 'checkpoints', 'shape'),
                os.path.join(workdir, 'checkpoints', 'shape'))
  for name in SHARED_FILES:
    _copy_missing(os.path.join(shape_stage, name), os.path.join(workdir, name))
  if twin_dir is None:
    return None
  scene = os.path.join(workdir, 'checkpoints', 'scene')
  prefix = os.path.join(twin_dir, 'checkpoints', 'scene', str(prefix_step))
  has_own_checkpoints = os.path.isdir(scene) and bool(os.listdir(scene))
  if has_own_checkpoints or not os.path.isdir(prefix):
    return None
  _copy_missing(prefix, os.path.join(scene, str(prefix_step)))
  return prefix_step


class _Clock:
  """Wall and CPU seconds (all of this process's threads) of a block."""

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *_):
    self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def run(config, workdir) -> dict:
  """Trains and evaluates every variant of config.ablation.variants; returns the results."""
  # jax loads only when the ablation runs
  from scenediff_jax.jobs import scene_eval
  from scenediff_jax.training import pipeline
  base = budgeted(config)
  a = base.ablation
  for name, twin in ALIGN_TWIN.items():
    order = a.variants
    if name in order and twin in order and order.index(twin) > order.index(name):
      raise ValueError(f'ablation.variants must list {twin} before {name}, which starts from '
                       f'its checkpoint.')
  path = os.path.join(workdir, 'ablation.json')
  results = _load(path, base)
  shape_stage = os.path.join(workdir, 'shape_stage')
  if 'shape_stage' not in results:
    with _Clock() as clock:
      pipeline.prepare(base, shape_stage)
    results['shape_stage'] = {'wall_seconds': clock.wall, 'cpu_seconds': clock.cpu}
  for name in a.variants:
    if name in results.get('variants', {}):
      logging.info('Ablation: %s is done (%s); skipping it.', name, path)
      continue
    config_v = variant(base, name)
    variant_dir = os.path.join(workdir, name)
    twin = ALIGN_TWIN.get(name)
    shared_steps = _seed_workdir(variant_dir, shape_stage,
                                 os.path.join(workdir, twin) if twin else None,
                                 base.training.diffusion_steps)
    logging.info('Ablation: training %s in %s%s.', name, variant_dir,
                 f' from {twin}\'s step {shared_steps}' if shared_steps else '')
    os.makedirs(variant_dir, exist_ok=True)
    with open(os.path.join(variant_dir, 'config.json'), 'w') as f:
      f.write(config_v.to_json_best_effort(indent=2))
    with _Clock() as train_clock:
      stages = pipeline.train(config_v, variant_dir)
    with _Clock() as eval_clock:
      scene_eval.evaluate(config_v, variant_dir, stages)
    with open(os.path.join(variant_dir, 'eval', 'metrics.json')) as f:
      metrics = json.load(f)  # with the baseline's headline numbers
    results.setdefault('variants', {})[name] = {
        'metrics': {k: v for k, v in metrics.items() if k != 'per_class'},
        'per_class_ap3d': {c: m.get('ap3d_15') for c, m in metrics.get('per_class', {}).items()},
        'shared_steps_from': {'variant': twin, 'steps': shared_steps} if shared_steps else None,
        'train_wall_seconds': train_clock.wall, 'train_cpu_seconds': train_clock.cpu,
        'eval_wall_seconds': eval_clock.wall, 'eval_cpu_seconds': eval_clock.cpu}
    _save(path, results)
  with open(os.path.join(workdir, 'ablation.md'), 'w') as f:
    f.write(markdown(results))
  logging.info('Ablation written to %s', os.path.join(workdir, 'ablation.md'))
  return results


def _load(path, config) -> dict:
  """The results so far, if they were made with this config; otherwise a fresh record."""
  command = ' '.join(['python -m scenediff_jax.main'] + sys.argv[1:])
  fresh = {'config': config.name, 'command': command,
           'budget': config.ablation.to_dict(), 'batch_size': config.training.batch_size,
           'machine': f'{platform.machine()}, {os.cpu_count()} cores',
           'date': time.strftime('%Y-%m-%d')}
  if not os.path.exists(path):
    return fresh
  with open(path) as f:
    results = json.load(f)
  if results.get('budget') != json.loads(json.dumps(fresh['budget'])):
    raise ValueError(f'{path} was made with another ablation budget ({results.get("budget")}); '
                     'use a new --workdir, or delete it to start again.')
  return results


def _save(path, results):
  with open(path + '.tmp', 'w') as f:
    json.dump(results, f, indent=2)
  os.replace(path + '.tmp', path)


def _fmt(value, digits=2):
  return '—' if value is None else f'{value:.{digits}f}'


def _minutes(seconds):
  return f'{seconds / 60:.1f}'


def _row(name, results, *flags):
  r = results['variants'][name]
  m, first = r['metrics'], r['metrics'].get('first_sample') or {}
  marks = ['✓' if f else '✗' for f in flags]
  shared = r['shared_steps_from']
  train = _minutes(r['train_cpu_seconds']) + (
      f' (+ {shared["steps"]} steps of {shared["variant"]})' if shared else '')
  return ('| ' + ' | '.join([name, *marks, _fmt(m.get('iou3d_mean')), _fmt(m.get('ap3d_15')),
                             _fmt(m.get('l_align'), 3), _fmt(m.get('shape_fscore')),
                             _fmt(m.get('shape_cd')), _fmt(m.get('layout_iou')),
                             f'{_fmt(first.get("iou3d_mean"))} / {_fmt(first.get("ap3d_15"))}'
                             if first else '= K-sample', train,
                             _minutes(r['eval_cpu_seconds'])]) + ' |')


def markdown(results: dict) -> str:
  """ablation.md: Table 2's layout, then the partial-shape experiment."""
  b, variants = results['budget'], results.get('variants', {})
  any_metrics = next(iter(variants.values()))['metrics'] if variants else {}
  shape = results.get('shape_stage', {})
  lines = [
      f'# Ablation: {results["config"]}', '',
      f'`{results["command"]}` on {results["machine"]}, {results["date"]}.', '',
      f'- Budget per variant: {b["diffusion_steps"]} diffusion steps + {b["joint_steps"]} joint '
      f'steps (L_align from step {b["diffusion_steps"]}), batch {results["batch_size"]}, the '
      'same seeds; the shape autoencoder is trained once and shared'
      + (f' ({_minutes(shape["cpu_seconds"])} CPU min).' if shape else '.'),
      f'- Eval: {any_metrics.get("num_scenes", b["eval_scenes"])} test scenes; diffusion variants '
      f'are scored on the consensus of K = {any_metrics.get("num_samples", "?")} samples '
      '(`eval.num_samples`), the "one sample" column on the first of them (the paper\'s '
      'protocol); regression makes one deterministic prediction.',
      '- Minutes are CPU minutes (all threads) of training and of evaluation. A no-align '
      'variant starts from its twin\'s checkpoint at the end of the diffusion stage, the same '
      'computation up to there; its minutes exclude those shared steps.', '',
      '## Table 2 layout', '',
      '| variant | diffusion | ISA | joint L_align | IoU3D ↑ | AP3D@15 ↑ | L_align ↓ | F-score ↑ '
      '| CD (×10³) ↓ | layout IoU ↑ | one sample IoU3D / AP3D | train min | eval min |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
  lines += [_row(name, results, *flags) for name, *flags in TABLE2_ROWS if name in variants]
  baselines = any_metrics.get('baselines', {})
  for name, m in baselines.items():
    lines.append(f'| {name} | | | | {_fmt(m.get("iou3d_mean"))} | {_fmt(m.get("ap3d_15"))} | '
                 f'— | — | — | {_fmt(m.get("layout_iou"))} | | | |')
  if any(name in variants for name in PARTIAL_ROWS[:2]):
    lines += ['', f'## Shapes known for {100 * b["shape_fraction"]:.0f}% of training scenes', '',
              'The other scenes keep depth and masks only (like SUN RGB-D): L_shape skips '
              'them, L_pose and L_align do not. Shape metrics are on test objects, all with '
              'ground truth.', '',
              '| variant | shapes known | joint L_align | IoU3D ↑ | AP3D@15 ↑ | L_align ↓ '
              '| F-score ↑ | CD (×10³) ↓ | layout IoU ↑ | one sample IoU3D / AP3D | train min '
              '| eval min |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for name in PARTIAL_ROWS:
      if name in variants:
        known = f'{100 * b["shape_fraction"]:.0f}%' if name != 'full' else '100%'
        row = _row(name, results, name != 'partial_shapes_no_align')
        lines.append(row.replace(f'| {name} | ', f'| {name} | {known} | ', 1))
  return '\n'.join(lines) + '\n'
