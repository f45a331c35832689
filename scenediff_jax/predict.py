"""From a photo to meshes: `python -m scenediff_jax.predict --model=M --input=IN --output=OUT`.

IN is one folder in the Total3D/Im3D demo format (img.jpg, cam_K.txt, detections.json) or a
folder of them; M a training workdir or an export bundle. For each input the scene is sampled
once (DDIM), every detected object is meshed, and OUT (or OUT/<folder name> for a folder of
inputs) receives scene.glb, one .ply per object, boxes.json and preview.png, written aside and
renamed into place when complete. Bad input stops before anything is written, with exit
status 2 and one line on stderr saying what is wrong and how to fix it.
"""
import os

from absl import app, flags, logging
import numpy as np
import tqdm

from scenediff_jax import cli
from scenediff_jax.inference import demo_input, scene_files, trained_model

_MODEL = flags.DEFINE_string('model', None, 'Training workdir or export bundle folder.')
_INPUT = flags.DEFINE_string('input', None, 'A demo folder (img.*, cam_K.txt, detections.json) '
                             'or a folder of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where the results go (created if missing).')
_PITCH = flags.DEFINE_float('pitch', None, 'Camera pitch in radians (default: 0, level camera).')
_ROLL = flags.DEFINE_float('roll', None, 'Camera roll in radians (default: 0).')
_STEPS = flags.DEFINE_integer('steps', None, 'DDIM steps (default: the model config\'s).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Classifier-free guidance scale (default: the '
                               'model config\'s; 1 = plain conditional sampling).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed of the first input (then seed + 1, ...).')
_MESH_RESOLUTION = flags.DEFINE_integer('mesh_resolution', 64, 'Marching-cubes cells per axis '
                                        '(a power-of-two multiple of 16).')
flags.mark_flags_as_required(['model', 'input', 'output'])



class UsageError(ValueError):
  """A flag value that cannot work (exit status 2, like bad input)."""


def model_batch(scene: demo_input.DemoInput, max_objects):
  """One demo input as a padded batch of one scene."""
  n = len(scene.classes)
  pad = lambda x: np.concatenate([x, np.zeros((max_objects - n, *x.shape[1:]), x.dtype)])[None]
  return {'image': scene.image[None], 'K': scene.K[None].astype(np.float32),
          'world_to_cam': scene.world_to_cam[None].astype(np.float32),
          'bbox2d': pad(scene.bbox2d.astype(np.float32)),
          'class': pad(scene.classes.astype(np.int32)), 'mask': pad(np.ones(n, bool))}


def reconstruct(model, scene, output_dir, *, seed, steps, guidance, mesh_resolution):
  batch = model_batch(scene, model.max_objects)
  sampled = model.sample_scene(batch, seed, steps, guidance)
  n = len(scene.classes)
  meshes = model.object_meshes(sampled['gaussians'][0, :n], sampled['intrinsics'][0, :n],
                               mesh_resolution)
  objects = [scene_files.SceneObject(
      class_index=int(scene.classes[k]), score=float(scene.scores[k]),
      bbox2d=scene.original_bbox2d[k], box=sampled['boxes'][0, k], mesh=meshes[k])
             for k in range(n)]
  return scene_files.write_scene(output_dir, image=scene.original_image, K=scene.original_K,
                                 world_to_cam=scene.world_to_cam, objects=objects,
                                 layout=sampled['layout'][0])


def check_flags():
  if _STEPS.value is not None and _STEPS.value < 1:
    raise UsageError(f'--steps={_STEPS.value}: give a positive number of DDIM steps.')
  resolution = _MESH_RESOLUTION.value
  if resolution < trained_model.COARSE_RESOLUTION or (resolution // trained_model.COARSE_RESOLUTION) & (
      resolution // trained_model.COARSE_RESOLUTION - 1) or resolution % trained_model.COARSE_RESOLUTION:
    raise UsageError(f'--mesh_resolution={resolution}: use 16, 32, 64, 128 or 256.')
  for name, value in (('pitch', _PITCH.value), ('roll', _ROLL.value),
                      ('guidance', _GUIDANCE.value)):
    if value is not None and not np.isfinite(value):
      raise UsageError(f'--{name}={value}: give a finite number.')


def run():
  check_flags()
  folders = demo_input.find_inputs(_INPUT.value)
  image_size, max_objects = trained_model.input_size(_MODEL.value)
  # Every input is read and checked before the model is loaded or anything is written.
  scenes = [demo_input.read_demo_input(f, image_size, max_objects, _PITCH.value, _ROLL.value)
            for f in folders]
  model = trained_model.load(_MODEL.value)
  steps = _STEPS.value or model.sampling_steps
  if steps > model.num_timesteps:
    raise UsageError(f'--steps={steps}: the model was trained with {model.num_timesteps} '
                     'timesteps; use at most that many.')
  guidance = model.guidance_scale if _GUIDANCE.value is None else _GUIDANCE.value
  single = len(folders) == 1 and os.path.abspath(folders[0]) == os.path.abspath(_INPUT.value)
  os.makedirs(_OUTPUT.value, exist_ok=True)
  for i, scene in enumerate(tqdm.tqdm(scenes, desc='predict', unit='scene',
                                      disable=len(scenes) == 1)):
    output_dir = _OUTPUT.value if single else os.path.join(_OUTPUT.value, scene.name)
    path = reconstruct(model, scene, output_dir, seed=_SEED.value + i, steps=steps,
                       guidance=guidance, mesh_resolution=_MESH_RESOLUTION.value)
    logging.info('%s: %d objects → %s', scene.name, len(scene.classes), path)


def main(argv):
  cli.run_program('predict', run, argv,
                  (demo_input.InputError, trained_model.ModelError, UsageError))


if __name__ == '__main__':
  app.run(main)
