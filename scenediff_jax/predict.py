"""From a photo to meshes: `python -m scenediff_jax.predict --model=M --input=IN --output=OUT`.

IN is one folder in the Total3D/Im3D demo format (img.jpg, detections.json, optionally
cam_K.txt) or a folder of them; M a training workdir or an export bundle. Without cam_K.txt, K
comes from the photo's EXIF or a default field of view; without --pitch/--roll, the camera's
tilt is estimated from the image (--camera=auto; --camera=level assumes a level camera).

For each input the scene is sampled --samples=K times (DDIM) and written as their consensus
(the rule evaluation scores: per object the sample box that overlaps the others most), with
each object's spread over the samples (mean IoU with the consensus box, RMS spread of the
centre and the yaw) in boxes.json and the samples' boxes drawn faintly in preview.png; an
object's "score" is then that agreement. Every object is meshed, and OUT (or OUT/<folder
name> for a folder of inputs) receives scene.glb, one .ply per object, boxes.json and
preview.png (and samples/sample_XX.glb with --write_samples).

Nothing of the user's is lost: the files are written INTO the folder, never over it. They are
staged in a hidden folder inside it and renamed into place, boxes.json last; other files stay,
and only files of the same names (and the object PLYs of an earlier prediction that boxes.json
lists and the new one does not write) are replaced or removed. A failed write leaves the folder
as it was. An OUT that is a file, lies under a file, or is (or contains) an input folder is
refused.

Every failure ends in one line on stderr, `predict: error: ...`:
  - exit 2: a bad flag, model or input, before anything is written. A folder of inputs is
    checked whole first: every bad one gets a warning naming it, and the good ones are
    predicted; --strict stops instead, as does a folder whose inputs are all bad.
  - exit 1: at run time, writing failed (a full or read-only disk: the line names the folder
    and the OS error), or some inputs of a folder were bad or failed (the summary line names
    each; the others are written).
"""
import contextlib
import errno
import os

from absl import app, flags, logging
import numpy as np
import tqdm

from scenediff_jax import cli, compiler
from scenediff_jax.inference import consensus, demo_input, scene_files, trained_model

_MODEL = flags.DEFINE_string('model', None, 'Training workdir or export bundle folder.')
_INPUT = flags.DEFINE_string('input', None, 'A demo folder (img.*, detections.json, optionally '
                             'cam_K.txt) or a folder of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Where the results go (created if missing).')
_PITCH = flags.DEFINE_float('pitch', None, 'Camera pitch in radians, > 0 looking down (default: '
                            'from --camera).')
_ROLL = flags.DEFINE_float('roll', None, 'Camera roll in radians (default: from --camera).')
_CAMERA = flags.DEFINE_enum('camera', 'auto', demo_input.CAMERA_MODES, 'Pitch and roll not given '
                            'by --pitch/--roll: "auto" estimates them from the image (a level '
                            'camera, with a warning, when it cannot); "level" assumes 0.')
_SAMPLES = flags.DEFINE_integer('samples', 8, 'Posterior samples per scene; the scene written is '
                                'their consensus, with each object\'s spread (1: one sample).')
_WRITE_SAMPLES = flags.DEFINE_bool('write_samples', False, 'Also write each sample\'s scene as '
                                   'samples/sample_XX.glb (meshes every object K times).')
_STEPS = flags.DEFINE_integer('steps', None, 'DDIM steps (default: the model config\'s).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'Classifier-free guidance scale (default: the '
                               'model config\'s; 1 = plain conditional sampling).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed of the first input (then seed + 1, ...).')
_MESH_RESOLUTION = flags.DEFINE_integer('mesh_resolution', 64, 'Marching-cubes cells per axis: '
                                        '16, 32, 64, 128 or 256.')
_STRICT = flags.DEFINE_bool('strict', False, 'With a folder of inputs: stop (exit 2, nothing '
                            'written) if any is bad, instead of predicting the good ones.')
_CACHE = cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['model', 'input', 'output'])


UsageError = cli.UsageError  # a flag value that cannot work (exit status 2, like bad input)


def reconstruct(model, scene, output_dir, *, seed, steps, guidance, mesh_resolution, samples=1,
                write_samples=False):
  """Samples one scene K times, meshes the consensus's objects and writes them into output_dir.

  Args:
    model: a trained_model.InferenceModel.
    scene: the demo_input.DemoInput.
    output_dir: the folder the files go into (its other files are left alone).
    seed, steps, guidance: of the DDIM sampler (sample k is drawn with
      trained_model.sample_seed(seed, k), as evaluation draws it).
    mesh_resolution: marching-cubes cells per axis.
    samples: K posterior samples; with K > 1 each object's score is its agreement.
    write_samples: also write each sample's scene as samples/sample_XX.glb.
  Returns:
    output_dir.
  """
  batch = trained_model.batch_inputs([trained_model.model_input(
      scene.image, scene.K, scene.world_to_cam, scene.bbox2d, scene.classes, model.max_objects)])
  chosen, drawn = model.sample_posterior(batch, seed, samples, steps, guidance)
  n = len(scene.classes)
  mesh = lambda sampled: model.object_meshes(sampled['gaussians'][0, :n],
                                             sampled['intrinsics'][0, :n], mesh_resolution)
  sample_boxes = np.stack([d['boxes'][0, :n] for d in drawn])  # [K, n, 7]
  spread = consensus.spread(sample_boxes, chosen['boxes'][0, :n]) if samples > 1 else None

  def objects_of(sampled, meshes):
    return [scene_files.SceneObject(
        class_index=int(scene.classes[k]),
        score=float(spread['agreement'][k] if spread else scene.scores[k]),
        bbox2d=scene.original_bbox2d[k], box=sampled['boxes'][0, k], mesh=meshes[k],
        posterior=None if spread is None else {key: v[k] for key, v in spread.items()},
        detection_score=float(scene.scores[k])) for k in range(n)]

  sample_scenes = ([(objects_of(d, mesh(d)), d['layout'][0]) for d in drawn]
                   if write_samples else None)
  return scene_files.write_scene(output_dir, image=scene.original_image, K=scene.original_K,
                                 world_to_cam=scene.world_to_cam,
                                 objects=objects_of(chosen, mesh(chosen)),
                                 layout=chosen['layout'][0], camera=scene.camera,
                                 sample_boxes=sample_boxes if samples > 1 else None,
                                 sample_scenes=sample_scenes)


def check_flags():
  if _STEPS.value is not None and _STEPS.value < 1:
    raise UsageError(f'--steps={_STEPS.value}: give a positive number of DDIM steps.')
  if _SAMPLES.value < 1:
    raise UsageError(f'--samples={_SAMPLES.value}: give a positive number of samples.')
  cli.check_mesh_resolution(_MESH_RESOLUTION.value)
  for name, value in (('pitch', _PITCH.value), ('roll', _ROLL.value),
                      ('guidance', _GUIDANCE.value)):
    if value is not None and not np.isfinite(value):
      raise UsageError(f'--{name}={value}: give a finite number.')


def check_output(output, inputs):
  """Refuses an --output that predict must not write into, before anything is read.

  Args:
    output: the --output value.
    inputs: the input demo folders; an output equal to or above one of them would put the
      results among the inputs (one inside an input folder is fine).
  Raises:
    UsageError: output is empty, a file (or anything but a folder), under a file, or equal to
      or an ancestor of an input folder.
  """
  path = cli.check_output_folder(output)
  for folder in inputs:
    folder = os.path.realpath(folder)
    if os.path.commonpath([path, folder]) == path:
      what = ('is the input folder' if folder == path else
              f'contains the input folder {folder}')
      raise UsageError(f'--output={output} {what}: give a folder that holds no input (one '
                       f'inside an input folder, e.g. {os.path.join(folder, "prediction")}, '
                       'is fine).')


def write_error(output_dir, error):
  """One line for a scene that could not be written: the folder, the error (for an OSError
  the OS's words and code, e.g. ENOSPC), and that the folder is as it was."""
  if isinstance(error, OSError) and error.strerror:
    code = errno.errorcode.get(error.errno)
    reason = f'{error.strerror} ({code})' if code else error.strerror
    return (f'{output_dir}: cannot write the prediction: {reason}; the folder is as it was '
            '(free some space or give a writable --output).')
  return (f'{output_dir}: the prediction failed ({type(error).__name__}: {error}); the folder '
          'is as it was.')


def bad_inputs(folders, read):
  """Reads and checks every input (dropping each once checked, so that a folder of many
  photos is never in memory at once); warns once per bad one.

  Args:
    folders: the demo folders.
    read: folder → demo_input.DemoInput, raising demo_input.InputError.
  Returns:
    {folder: its InputError} of the bad ones.
  """
  bad = {}
  for folder in folders:
    try:
      read(folder)
    except demo_input.InputError as error:
      logging.warning('%s: bad input: %s', os.path.basename(folder), error)
      bad[folder] = error
  return bad


@contextlib.contextmanager
def _quiet():
  """For reading an input a second time: its warnings were logged when it was checked."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(verbosity)


def _listing(failures):
  return '; '.join(f'{os.path.basename(f)} ({" ".join(str(e).split())})'
                   for f, e in failures.items())


def run():
  check_flags()
  compiler.use_persistent_cache(_CACHE.value)
  folders = demo_input.find_inputs(_INPUT.value)
  check_output(_OUTPUT.value, folders)
  single = len(folders) == 1 and os.path.abspath(folders[0]) == os.path.abspath(_INPUT.value)
  source = trained_model.find_model(_MODEL.value)  # its input size; parameters come later
  read = lambda folder: demo_input.read_demo_input(folder, source.image_size, source.max_objects,
                                                   _PITCH.value, _ROLL.value, _CAMERA.value)
  # Every input is read and checked before the model is loaded or anything is written.
  if single:
    scene, bad = read(folders[0]), {}
  else:
    bad = bad_inputs(folders, read)
    if bad and (_STRICT.value or len(bad) == len(folders)):
      which = 'every input is bad' if len(bad) == len(folders) else (
          f'{len(bad)} of {len(folders)} inputs are bad (--strict)')
      raise demo_input.InputError(f'{which}; nothing was written: {_listing(bad)}')
  model = trained_model.load(source)
  steps = _STEPS.value or model.sampling_steps
  if steps > model.num_timesteps:
    raise UsageError(f'--steps={steps}: the model was trained with {model.num_timesteps} '
                     'timesteps; use at most that many.')
  guidance = model.guidance_scale if _GUIDANCE.value is None else _GUIDANCE.value
  settings = dict(steps=steps, guidance=guidance, mesh_resolution=_MESH_RESOLUTION.value,
                  samples=_SAMPLES.value, write_samples=_WRITE_SAMPLES.value)

  if single:
    try:
      reconstruct(model, scene, _OUTPUT.value, seed=_SEED.value, **settings)
    except OSError as error:
      cli.fail('predict', write_error(_OUTPUT.value, error), status=1)
    logging.info('%s: %d objects → %s', scene.name, len(scene.classes), _OUTPUT.value)
    return

  failed = dict(bad)
  good = [(i, f) for i, f in enumerate(folders) if f not in bad]
  for i, folder in tqdm.tqdm(good, desc='predict', unit='scene'):
    output_dir = os.path.join(_OUTPUT.value, os.path.basename(folder))
    try:
      with _quiet():
        scene = read(folder)  # again: one decoded image at a time
      # The seed follows the input's place in the folder, whichever others are bad.
      reconstruct(model, scene, output_dir, seed=_SEED.value + i, **settings)
    except Exception as error:  # pylint: disable=broad-except
      # One scene's failure (a full disk, a mesh that cannot be written) stops no other.
      reason = (str(error) if isinstance(error, demo_input.InputError) else
                write_error(output_dir, error))
      logging.warning('%s: failed: %s', os.path.basename(folder), reason)
      logging.debug('%s: the failure', folder, exc_info=True)  # with --verbosity=1
      failed[folder] = reason
      continue
    logging.info('%s: %d objects → %s', scene.name, len(scene.classes), output_dir)
  done = len(folders) - len(failed)
  if failed:
    cli.fail('predict', f'predicted {done} of {len(folders)} scenes into {_OUTPUT.value}; '
             f'failed: {_listing(failed)}', status=1)
  logging.info('predicted %d scenes into %s', done, _OUTPUT.value)


def main(argv):
  cli.run_program('predict', run, argv,
                  (demo_input.InputError, trained_model.ModelError, UsageError))


if __name__ == '__main__':
  app.run(main)
