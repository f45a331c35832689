"""How well the camera's tilt is estimated from the image alone: `python -m
scenediff_jax.jobs.camera_accuracy --config=configs/synthetic.py --split=test --num_scenes=200`
runs inference/gravity.py on
SynthRooms renders of known pitch and roll (pitched 0–30°, rolled ±5°) and prints the median,
mean and 90th-percentile errors, with the share of scenes it would fall back to a level camera
on (the errors then counted as predict uses them: level's error), to stdout and --output.

With --predictions=TRUE.npz,ESTIMATED.npz (two evaluations' eval*/predictions.npz of one
model, with the true and with estimated cameras) it also splits IoU3D by the scene's tilt
error: where the estimated camera's cost lies.

The renders are the built dataset's (the config's data_dir: build it with the main job first),
as evaluation reads them.
"""
import json
import os

from absl import app, flags
from ml_collections import config_flags
import numpy as np
import tqdm

from data_pipelines import registry
from scenediff_jax.evaluation import detection
from scenediff_jax.jobs import scene_eval
from scenediff_jax.training import scene_data


def _define_flags():
  """The CLI's flags, defined only when run as a program: tests import measure() beside
  modules whose flags share these names."""
  global _SPLIT, _NUM_SCENES, _CONFIG, _OUTPUT, _PREDICTIONS
  _SPLIT = flags.DEFINE_string('split', 'test', 'Split of SynthRooms (choose settings on train).')
  _NUM_SCENES = flags.DEFINE_integer('num_scenes', 200, 'First scenes of the split.')
  _CONFIG = config_flags.DEFINE_config_file('config', 'configs/synthetic.py',
                                            'The dataset\'s config (its data_dir).')
  _OUTPUT = flags.DEFINE_string('output', None, 'Also write the figures here (JSON).')
  _PREDICTIONS = flags.DEFINE_list('predictions', None, 'TRUE.npz,ESTIMATED.npz: split their '
                                   'IoU3D by the tilt error.')


ERROR_BUCKETS = (0.0, 1.0, 2.0, 5.0, 10.0, np.inf)  # degrees, the larger of pitch and roll


def tilt_errors(record):
  """(|estimate − truth| [pitch, roll] in degrees, the same of the camera predict uses, which
  is level when the estimate is not reliable, and whether it fell back) of one record, as
  evaluation with estimated cameras measures them."""
  _, found = scene_eval.estimated_camera(record)
  used = np.array([found['pitch_error'], found['roll_error']])
  return found['raw_errors'], used, found['fallback']


def measure(records) -> dict:
  """Errors (degrees) of the estimates used for the records, and the fallback share.

  Args:
    records: SynthRooms records (image, K, world_to_cam).
  Returns:
    {'pitch': {'median', 'mean', 'p90'}, 'roll': {...}, 'fallback_share', 'num_scenes',
     'raw': the same errors of the estimates before any fallback}.
  """
  raw, used, fallback = zip(*(tilt_errors(r) for r in records))
  summary = lambda errors: {name: {'median': float(np.median(e)), 'mean': float(np.mean(e)),
                                   'p90': float(np.percentile(e, 90))}
                            for name, e in zip(('pitch', 'roll'), np.transpose(errors))}
  return {**summary(used), 'fallback_share': float(np.mean(fallback)),
          'num_scenes': len(used), 'raw': summary(raw)}


def iou_by_error(source, max_objects, true_file, estimated_file):
  """IoU3D (percent) of the two evaluations' objects, by the tilt error of their scene."""
  true, estimated = np.load(true_file), np.load(estimated_file)
  if not np.array_equal(true['scene_index'], estimated['scene_index']):
    raise ValueError(f'{true_file} and {estimated_file} scored different scenes.')
  rows = []
  records = [scene_data.limit_objects(source[int(i)], max_objects) for i in true['scene_index']]
  for s, record in enumerate(records):
    n = int(true['num_objects'][s])
    gt = record['objects']['box3d'][:n]
    rows.append((tilt_errors(record)[1].max(), 100 * detection.paired_iou(gt, true['boxes'][s, :n]),
                 100 * detection.paired_iou(gt, estimated['boxes'][s, :n])))
  table = []
  for lo, hi in zip(ERROR_BUCKETS[:-1], ERROR_BUCKETS[1:]):
    inside = [r for r in rows if lo <= r[0] < hi]
    if inside:
      table.append({'error_degrees': [lo, hi], 'scenes': len(inside),
                    'objects': int(sum(len(r[1]) for r in inside)),
                    'iou3d_true': float(np.mean(np.concatenate([r[1] for r in inside]))),
                    'iou3d_estimated': float(np.mean(np.concatenate([r[2] for r in inside])))})
  return table


def main(argv):
  del argv
  config = _CONFIG.value
  source = registry.scene_builder(config, prepare=False).as_data_source(_SPLIT.value)
  count = min(_NUM_SCENES.value, len(source))
  figures = measure(source[i] for i in tqdm.tqdm(range(count), desc='gravity', unit='scene'))
  figures['split'] = _SPLIT.value
  for name in ('pitch', 'roll'):
    e = figures[name]
    print(f'{name}: median {e["median"]:.2f}°, mean {e["mean"]:.2f}°, 90th percentile '
          f'{e["p90"]:.2f}°')
  print(f'fell back to level on {100 * figures["fallback_share"]:.1f}% of {count} '
        f'{_SPLIT.value} scenes')
  if _PREDICTIONS.value:
    figures['iou3d_by_error'] = iou_by_error(source, config.max_objects, *_PREDICTIONS.value)
    print('tilt error | scenes | objects | IoU3D true camera | IoU3D estimated camera')
    for row in figures['iou3d_by_error']:
      lo, hi = row['error_degrees']
      print(f'[{lo:g}°, {hi:g}°) | {row["scenes"]} | {row["objects"]} | '
            f'{row["iou3d_true"]:.2f} | {row["iou3d_estimated"]:.2f}')
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, 'w') as f:
      json.dump(figures, f, indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
