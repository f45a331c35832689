"""Markdown tables of docs/shape_autoencoder_eval.md from shape-autoencoder workdirs:
  python launch/shape_table.py OUT/VARIANT[:EVAL] [...]
one row per workdir's EVAL/metrics.json (default eval_shape): F-score and Chamfer (×10³)
overall and per class, the training speed from logs/shape_metrics.jsonl, and the share of
shapes whose coarse-to-fine mesh equals the dense one when that was measured."""
import json
import os
import sys

from scenediff_jax.geometry.classes import CLASSES


def _fmt(x, digits=1):
  return '—' if x is None else f'{x:.{digits}f}'


def _steps_per_second(workdir):
  path = os.path.join(workdir, 'logs', 'shape_metrics.jsonl')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    speeds = [json.loads(line).get('steps_per_second') for line in f]
  speeds = [s for s in speeds if s]
  return sorted(speeds)[len(speeds) // 2] if speeds else None


def main(args):
  header = '| variant | steps/s | F-score | CD | ' + ' | '.join(CLASSES) + ' |'
  print('F-score (%) per class; CD ×10³; steps/s: median over the run\'s log intervals.')
  print()
  print(header)
  print('|' + '---|' * (4 + len(CLASSES)))
  cds = []
  for arg in args:
    d, _, folder = arg.partition(':')
    with open(os.path.join(d, folder or 'eval_shape', 'metrics.json')) as f:
      m = json.load(f)
    name = os.path.basename(os.path.normpath(d)) + (f' ({folder})' if folder else '')
    per = m['per_class']
    print(f'| {name} | {_fmt(_steps_per_second(d), 2)} | {_fmt(m["shape_fscore"])} | '
          f'{_fmt(m["shape_cd"], 2)} | '
          + ' | '.join(_fmt(per.get(c, {}).get('fscore')) for c in CLASSES) + ' |')
    cds.append(f'| {name} | ' + ' | '.join(_fmt(per.get(c, {}).get('chamfer'), 2) for c in CLASSES)
               + f' | {_fmt(m.get("samples_to_surface"), 5)} | '
               + (f'{100 * m["same_as_dense_share"]:.1f}%' if 'same_as_dense_share' in m else '—')
               + ' |')
  print()
  print('Chamfer ×10³ per class; samples→surface (canonical units²); coarse-to-fine = dense:')
  print()
  print('| variant | ' + ' | '.join(CLASSES) + ' | samples→surface | c2f = dense |')
  print('|' + '---|' * (3 + len(CLASSES)))
  print('\n'.join(cds))


if __name__ == '__main__':
  main(sys.argv[1:])
