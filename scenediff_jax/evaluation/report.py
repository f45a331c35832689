"""Writes an evaluation to disk: `eval/metrics.json` and `eval/report.md`.

The report's tables follow the paper: Table 1 (SUN RGB-D IoU3D / AP3D@15 / L_align,
Pix3D Chamfer / F-score, plus layout IoU) with the paper's published rows for reference,
and Table 4 (AP3D per class). Baselines scored on the same split (e.g. the trivial
class-means baseline of baseline.py) get their own rows right below this run's.
"""
import json
import os

from scenediff_jax.geometry.classes import AP_CLASSES

# Published numbers (PAPER.md), real data: for reading our numbers, not comparable with
# SynthRooms ones.
PAPER_ROWS = {
    'Total3D': (20.52, 30.56, 1.35, 44.32, 36.20, 59.2),
    'Im3D': (28.31, 46.14, 1.24, 51.31, 21.45, 64.4),
    'InstPIFu': (26.14, 45.02, 1.19, 24.65, 45.28, None),
    'paper': (36.10, 58.18, 0.99, 15.05, 58.71, 66.1),
}
PAPER_PER_CLASS_AP = (86.58, 58.68, 74.13, 71.36, 62.81, 55.76, 48.14, 50.44, 52.09, 21.82)
# What metrics.json keeps of a baseline: the headline numbers, not its full evaluation.
BASELINE_KEYS = ('ap3d_15', 'iou3d_mean', 'layout_iou', 'l_align', 'shape_cd', 'shape_fscore')
BASELINE_PER_CLASS_KEYS = ('ap3d_15', 'iou3d_mean')


def _fmt(value, digits=2):
  return '—' if value is None else f'{value:.{digits}f}'


def _table1_row(m):
  return (m.get('iou3d_mean'), m.get('ap3d_15'), m.get('l_align'), m.get('shape_cd'),
          m.get('shape_fscore'), m.get('layout_iou'))


def _table4_row(m):
  per_class = m.get('per_class', {})
  return [per_class.get(c, {}).get('ap3d_15') for c in AP_CLASSES] + [m.get('ap3d_15')]


def compact_baselines(baselines: dict) -> dict:
  """{name: baseline metrics} → what metrics.json stores under `baselines`."""
  return {name: {**{k: m.get(k) for k in BASELINE_KEYS},
                 'per_class': {c: {k: v.get(k) for k in BASELINE_PER_CLASS_KEYS}
                               for c, v in m.get('per_class', {}).items()}}
          for name, m in baselines.items()}


def markdown(metrics: dict, title: str = 'Evaluation', baselines: dict = None) -> str:
  """The report; `baselines` {name: metrics of the same format} adds one row each."""
  baselines = baselines or {}
  source = ', '.join(f'{k} {metrics[k]}' for k in ('config', 'step') if k in metrics)
  lines = [f'# {title}', '',
           f'{metrics["num_scenes"]} scenes, {metrics["num_objects"]} objects'
           + (f' ({source})' if source else '') + '.', '',
           '## Table 1: scene reconstruction', '',
           '| method | IoU3D ↑ | AP3D@15 ↑ | L_align ↓ | CD (×10³) ↓ | F-score ↑ | layout IoU ↑ |',
           '|---|---|---|---|---|---|---|']
  lines.append('| **this run** | ' + ' | '.join(_fmt(v) for v in _table1_row(metrics)) + ' |')
  for name, m in baselines.items():
    lines.append(f'| {name} | ' + ' | '.join(_fmt(v) for v in _table1_row(m)) + ' |')
  for name, row in PAPER_ROWS.items():
    lines.append(f'| {name} (published, real data) | ' + ' | '.join(_fmt(v) for v in row) + ' |')
  if metrics.get('ap3d_15_agreement') is not None:
    lines += ['', f'AP3D@15 is scored with every confidence 1 (the Total3D/Im3D protocol). '
              f'With each object\'s agreement over the {metrics.get("num_samples")} samples '
              f'as its confidence (what predict writes as "score"): '
              f'**{_fmt(metrics["ap3d_15_agreement"])}**.']
  camera = metrics.get('camera')
  if camera and camera.get('source') == 'estimated':
    lines += ['', f'Camera pitch and roll estimated from the image (inference/gravity.py), not '
              f'the true ones: median error {_fmt(camera["pitch_error_median"])}° pitch, '
              f'{_fmt(camera["roll_error_median"])}° roll; level camera assumed for '
              f'{_fmt(100 * camera["fallback_share"], 1)}% of the scenes (estimate not '
              'reliable).']
  if metrics.get('num_meshed_objects'):
    lines += ['', f'Shapes: {metrics["num_meshed_objects"]} meshed objects; CD '
              f'{_fmt(metrics["shape_cd"])} ± {_fmt(metrics.get("shape_cd_stderr"))}, F-score '
              f'{_fmt(metrics["shape_fscore"])} ± {_fmt(metrics.get("shape_fscore_stderr"))} '
              '(± one standard error of the mean over objects).']
  lines += ['', '## Table 4: AP3D@15 per class', '',
            '| | ' + ' | '.join(AP_CLASSES) + ' | mean |',
            '|---|' + '---|' * (len(AP_CLASSES) + 1)]
  per_class = metrics['per_class']
  lines.append('| **this run** | ' + ' | '.join(_fmt(v) for v in _table4_row(metrics)) + ' |')
  for name, m in baselines.items():
    lines.append(f'| {name} | ' + ' | '.join(_fmt(v) for v in _table4_row(m)) + ' |')
  lines.append('| paper (published, real data) | ' + ' | '.join(_fmt(v) for v in PAPER_PER_CLASS_AP)
               + ' | 58.18 |')
  lines += ['', '## Per class', '',
            '| class | objects | AP3D@15 | IoU3D | CD (×10³) | F-score |',
            '|---|---|---|---|---|---|']
  for c in AP_CLASSES:
    m = per_class[c]
    lines.append(f'| {c} | {m["num_objects"]} | {_fmt(m["ap3d_15"])} | {_fmt(m["iou3d_mean"])} | '
                 f'{_fmt(m["shape_cd"])} | {_fmt(m["shape_fscore"])} |')
  options = metrics.get('shape_metric_options')
  if options:
    lines += ['', f'Shape metrics: {options}.']
  lines += ['', 'AP: VOC all-point interpolation, greedy matching by confidence; classes without '
            'ground truth are left out of the mean. IoU3D: each prediction with its own object. '
            'L_align: metres², depth → reconstruction.', '']
  return '\n'.join(lines)


def write(metrics: dict, eval_dir: str, title: str = 'Evaluation', baselines: dict = None) -> None:
  """Writes metrics.json and report.md into eval_dir (complete files or none).

  With `baselines`, metrics.json also holds their headline numbers under `baselines`.
  """
  saved = {**metrics, 'baselines': compact_baselines(baselines)} if baselines else metrics
  os.makedirs(eval_dir, exist_ok=True)
  for name, text in (('metrics.json', json.dumps(saved, indent=2, sort_keys=True)),
                     ('report.md', markdown(metrics, title, baselines))):
    path = os.path.join(eval_dir, name)
    with open(path + '.tmp', 'w') as f:
      f.write(text + '\n')
    os.replace(path + '.tmp', path)
