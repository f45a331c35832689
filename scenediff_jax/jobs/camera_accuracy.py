"""How well the camera's tilt is estimated from the image alone: `python -m
scenediff_jax.jobs.camera_accuracy --config=configs/synthetic.py --split=test --num_scenes=200`
runs inference/gravity.py on
SynthRooms renders of known pitch and roll (pitched 0–30°, rolled ±5°) and prints the median,
mean and 90th-percentile errors, with the share of scenes it would fall back to a level camera
on (the errors then counted as predict uses them: level's error), to stdout and --output.

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
from scenediff_jax.geometry import camera
from scenediff_jax.inference import gravity

_SPLIT = flags.DEFINE_string('split', 'test', 'Split of SynthRooms (choose settings on train).')
_NUM_SCENES = flags.DEFINE_integer('num_scenes', 200, 'First scenes of the split.')
_CONFIG = config_flags.DEFINE_config_file('config', 'configs/synthetic.py',
                                          'The dataset\'s config (its data_dir).')
_OUTPUT = flags.DEFINE_string('output', None, 'Also write the figures here (JSON).')


def measure(records) -> dict:
  """Errors (degrees) of the estimates used for the records, and the fallback share.

  Args:
    records: SynthRooms records (image, K, world_to_cam).
  Returns:
    {'pitch': {'median', 'mean', 'p90'}, 'roll': {...}, 'fallback_share', 'num_scenes',
     'raw': the same errors of the estimates before any fallback}.
  """
  used, raw, fallback = [], [], []
  for record in records:
    truth = np.degrees(camera.pitch_roll(np.asarray(record['world_to_cam'], np.float64)))
    estimate = gravity.estimate_gravity(record['image'], record['K'])
    angles = np.degrees([estimate.pitch, estimate.roll])
    raw.append(np.abs(angles - truth))
    used.append(raw[-1] if estimate.reliable else np.abs(truth))
    fallback.append(not estimate.reliable)
  summary = lambda errors: {name: {'median': float(np.median(e)), 'mean': float(np.mean(e)),
                                   'p90': float(np.percentile(e, 90))}
                            for name, e in zip(('pitch', 'roll'), np.transpose(errors))}
  return {**summary(used), 'fallback_share': float(np.mean(fallback)),
          'num_scenes': len(used), 'raw': summary(raw)}


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
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    with open(_OUTPUT.value, 'w') as f:
      json.dump(figures, f, indent=1)


if __name__ == '__main__':
  app.run(main)
