"""SynthRooms scenes as demo folders, for trying predict on a photo whose camera it must
estimate: `python -m scenediff_jax.jobs.demo_folders --split=test --scenes=3,7 --output=DIR`
writes DIR/<split>_<index>/ with img.jpg and detections.json only (no cam_K.txt: the renders
have SUN RGB-D's field of view, predict's default) and, beside them in camera.json, the true
pitch and roll in degrees to compare with boxes.json's estimate.
"""
import json
import math
import os

from absl import app, flags
from ml_collections import config_flags
import numpy as np

from data_pipelines import registry
from scenediff_jax.geometry import camera
from scenediff_jax.inference import demo_input

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/synthetic.py',
                                          'The dataset\'s config (its data_dir).')
_SPLIT = flags.DEFINE_string('split', 'test', 'Split of SynthRooms.')
_SCENES = flags.DEFINE_list('scenes', ['0'], 'Scene indices.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder the demo folders go into.')
flags.mark_flag_as_required('output')


def main(argv):
  del argv
  source = registry.scene_builder(_CONFIG.value, prepare=False).as_data_source(_SPLIT.value)
  for index in (int(i) for i in _SCENES.value):
    record = source[index]
    folder = os.path.join(_OUTPUT.value, f'{_SPLIT.value}_{index}')
    demo_input.write_demo_folder(folder, record)
    os.remove(os.path.join(folder, demo_input.K_NAME))
    pitch, roll = camera.pitch_roll(np.asarray(record['world_to_cam'], np.float64))
    with open(os.path.join(folder, 'camera.json'), 'w') as f:
      json.dump({'pitch_degrees': math.degrees(pitch), 'roll_degrees': math.degrees(roll)}, f)
    print(folder)


if __name__ == '__main__':
  app.run(main)
