"""Markdown rows of docs/recipe.md from recipe-screen workdirs (launch/recipe_screen.sh):
  python launch/recipe_table.py OUT/VARIANT[:EVAL] [OUT/VARIANT[:EVAL] ...]
one row per workdir's EVAL/metrics.json (EVAL: its eval folder, `eval` unless given, e.g.
eval_g1.5 for `--config.eval.tag=g1.5`), then x̂₀-MSE per SNR band."""
import json
import os
import sys

BANDS = ('snr>10', 'snr 1-10', 'snr 0.1-1', 'snr<0.1')  # training/denoising_error.SNR_BANDS


def _fmt(x, digits=2):
  return '—' if x is None else f'{x:.{digits}f}'


def main(args):
  rows, bands = [], []
  for arg in args:
    d, _, folder = arg.partition(':')
    with open(os.path.join(d, folder or 'eval', 'metrics.json')) as f:
      m = json.load(f)
    one = m.get('first_sample') or m  # regression: one deterministic pass
    name = os.path.basename(os.path.normpath(d)) + (f' ({folder})' if folder else '')
    rows.append(f'| {name} | {_fmt(one["iou3d_mean"])} / {_fmt(m["iou3d_mean"])} | '
                f'{_fmt(one["ap3d_15"])} / {_fmt(m["ap3d_15"])} | '
                f'{_fmt(one["layout_iou"])} / {_fmt(m["layout_iou"])} | '
                f'{_fmt(m.get("shape_fscore"))} | {_fmt(m.get("shape_cd"))} | '
                f'{_fmt(m.get("l_align"), 3)} |')
    by_band = m.get('x0_mse_by_snr') or {}
    cells = ' | '.join(f'{_fmt(by_band[b]["pose"], 3)} / {_fmt(by_band[b]["shape"], 3)}'
                       if b in by_band else '—' for b in BANDS)
    bands.append(f'| {name} | {cells if by_band else "— (one fixed input)"} |')
  print('| variant | IoU3D K=1 / K | AP3D@15 K=1 / K | layout IoU K=1 / K | F-score | CD ×10³ '
        '| L_align |')
  print('|---|---|---|---|---|---|---|')
  print('\n'.join(rows))
  print()
  print('x̂₀-MSE (normalised units) of one network call, pose / shape, per SNR band:')
  print()
  print('| variant | ' + ' | '.join(BANDS) + ' |')
  print('|---|' + '---|' * len(BANDS))
  print('\n'.join(bands))


if __name__ == '__main__':
  main(sys.argv[1:])
