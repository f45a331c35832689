"""From a photo to meshes: predict on demo folders, the exported bundle in a fresh process,
unconditional sampling, and every bad input failing with exit status 2 and one line."""
import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
from PIL import Image
import pytest
import trimesh

from scenediff_jax import predict
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.geometry import camera
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.inference import bundle, demo_input, scene_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_SIZE = (200, 320)  # (H, W): not SUN RGB-D's, not the model's


def write_demo_folder(folder, record, size=DEMO_SIZE):
  """A SynthRooms record in the Total3D/Im3D demo format, resized, with one detection of a
  class we do not support."""
  demo_input.write_demo_folder(folder, record, size,
                               extra_detections=[{'bbox': [5, 5, 60, 40], 'class': 'picture'}])


def run(module, *args, timeout=600):
  return subprocess.run([sys.executable, '-m', f'scenediff_jax.{module}', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


# --- Bad input: in process, against a model folder that only describes its input size. -----

@pytest.fixture
def fake_model(tmp_path):
  """A bundle folder with just bundle.json: enough for predict to check inputs, which it
  does before loading anything."""
  model = tmp_path / 'model'
  model.mkdir()
  (model / bundle.METADATA).write_text(json.dumps({'image_size': [48, 64], 'max_objects': 4}))
  return str(model)


@pytest.fixture
def demo(tmp_path, scenes):
  folder = tmp_path / 'demo'
  write_demo_folder(str(folder), scenes[16])
  return folder


def predict_in_process(capsys, *argv):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['predict', *argv])
  with pytest.raises(SystemExit) as exit_info:
    predict.main(['predict'])
  return exit_info.value.code, capsys.readouterr().err


def _corrupt(name, text):
  def apply(folder):
    path = folder / name
    if text is None:
      path.unlink()
    elif isinstance(text, bytes):
      path.write_bytes(text)
    else:
      path.write_text(text)
  return apply


def _detections(edit):
  def apply(folder):
    detections = json.loads((folder / 'detections.json').read_text())
    (folder / 'detections.json').write_text(json.dumps(edit(detections)))
  return apply


BAD_INPUTS = {
    'missing image': (_corrupt('img.jpg', None), 'img'),
    'corrupt image': (_corrupt('img.jpg', b'\xff\xd8\xff\xe0 not really a jpeg'), 'img.jpg'),
    'K not 3x3': (_corrupt('cam_K.txt', '500 0 160\n0 500 100\n'), 'cam_K.txt'),
    'negative focal length': (_corrupt('cam_K.txt', '-500 0 160\n0 500 100\n0 0 1\n'), 'cam_K.txt'),
    'NaN in K': (_corrupt('cam_K.txt', 'nan 0 160\n0 500 100\n0 0 1\n'), 'cam_K.txt'),
    'missing detections': (_corrupt('detections.json', None), 'detections.json'),
    'detections not JSON': (_corrupt('detections.json', '[{"bbox": [1, 2'), 'detections.json'),
    'no detections': (_corrupt('detections.json', '[]'), 'detections.json'),
    'only unknown classes': (_detections(lambda d: [{**x, 'class': 'ceiling'} for x in d]),
                             'detections.json'),
    'infinite box': (_detections(lambda d: [{**d[0], 'bbox': [1, 2, 'Infinity', 4]}] + d[1:]),
                     'detections.json'),
    'NaN score': (_detections(lambda d: [{**d[0], 'score': float('nan')}] + d[1:]),
                  'detections.json'),
    'box of three numbers': (_detections(lambda d: [{**d[0], 'bbox': [1, 2, 3]}] + d[1:]),
                             'detections.json'),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, demo, fake_model, tmp_path,
                                                             capsys):
  corrupt, named = BAD_INPUTS[case]
  corrupt(demo)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  code, err = predict_in_process(capsys, f'--model={fake_model}', f'--input={demo}',
                                 f'--output={out}')
  assert code == 2
  errors = [line for line in err.splitlines() if line.startswith('predict: error:')]
  assert len(errors) == 1 and named in errors[0], err
  assert 'Traceback' not in err
  assert sorted(os.listdir(out)) == ['keep.txt']


def test_a_path_that_is_not_a_model(demo, tmp_path, capsys):
  not_a_model = tmp_path / 'empty'
  not_a_model.mkdir()
  for model in (not_a_model, tmp_path / 'missing'):
    code, err = predict_in_process(capsys, f'--model={model}', f'--input={demo}',
                                   f'--output={tmp_path / "out"}')
    assert code == 2 and ('not a model' in err or 'does not exist' in err), err
    assert not (tmp_path / 'out').exists()


def test_bad_input_in_a_fresh_process_has_no_traceback(demo, fake_model, tmp_path):
  (demo / 'cam_K.txt').write_text('1 2 3\n')
  result = run('predict', f'--model={fake_model}', f'--input={demo}', f'--output={tmp_path / "o"}',
               timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('predict: error:')
  assert 'Traceback' not in result.stderr and not (tmp_path / 'o').exists()


# --- A tiny trained model, end to end. -------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A smoke model trained for a few steps through the main job, and its export bundle."""
  root = tmp_path_factory.mktemp('predict')
  work = root / 'work'
  # Deterministic DDIM (η = 0): a model this weak spreads its stochastic samples (the
  # default η = 1) too widely for the placement checks below.
  common = ['--config=configs/synthetic.py:smoke', f'--config.data_dir={root / "tfds"}',
            f'--workdir={work}', '--config.diffusion.eta=0.0']
  result = run('main', *common, '--mode=train', '--config.training.diffusion_steps=300',
               '--config.training.joint_steps=0', timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  result = run('main', *common, '--mode=export')
  assert result.returncode == 0, result.stderr[-3000:]
  return root, work


def _check_prediction(out, record, pitch_roll_given=True):
  names = sorted(os.listdir(out))
  for name in ('scene.glb', 'boxes.json', 'preview.png'):
    assert name in names
  boxes = json.loads((out / 'boxes.json').read_text())
  objects = boxes['objects']
  assert len(objects) == len(record['objects']['class'])  # 'picture' skipped
  assert [o['class'] for o in objects] == [CLASSES[c] for c in record['objects']['class']]
  glb = trimesh.load(out / 'scene.glb')
  assert isinstance(glb, trimesh.Scene) and 'layout' in glb.geometry
  K = np.array(boxes['K'])
  R = np.array(boxes['world_to_cam'])
  overlaps = []
  for k, o in enumerate(objects):
    box = np.array(o['center'] + o['size'] + [o['yaw']])
    ply = trimesh.load(out / f'{scene_files.object_name(k, CLASSES.index(o["class"]))}.ply')
    # boxes.json agrees with the meshes' placement: every vertex in its box...
    # (The grid reaches ±0.55 of the box.)
    assert np.all(boxes_lib.points_in_box(np.asarray(ply.vertices), box, inflate=0.11))
    # ...and the same object in the GLB, turned y-up.
    name = scene_files.object_name(k, CLASSES.index(o['class']))
    glb_vertices = np.asarray(glb.geometry[name].vertices) * [1, -1, -1]
    np.testing.assert_allclose([glb_vertices.min(0), glb_vertices.max(0)], ply.bounds, atol=1e-4)
    # In front of the camera, and projected onto the image over its own 2D box.
    assert camera.world_to_camera_points(box[:3], R)[2] > 0
    corners = camera.world_to_camera_points(boxes_lib.box_corners(box), R)
    pixels, _ = camera.project(boxes_lib.box_corners(box), K, R)
    (x1, y1), (x2, y2) = pixels.min(0), pixels.max(0)
    bx1, by1, bx2, by2 = o['bbox2d']
    overlaps.append(bool(np.all(corners[:, 2] > 0) and min(x2, bx2) > max(x1, bx1) and
                         min(y2, by2) > max(y1, by1)))
  # The smoke model has seen 300 steps of 4 scenes: most, not all, of its boxes land right.
  assert np.mean(overlaps) >= 0.5, overlaps
  preview = Image.open(out / 'preview.png')
  assert preview.size[0] > 3 * DEMO_SIZE[1]


@pytest.mark.slow
def test_predict_on_demo_folders_from_a_workdir_and_from_its_bundle(trained, scenes, tmp_path):
  _, work = trained
  inputs = tmp_path / 'inputs'
  records = {'room_a': scenes[16], 'room_b': scenes[17]}
  for name, record in records.items():
    write_demo_folder(str(inputs / name), record)
  pitch, roll = camera.pitch_roll(scenes[16]['world_to_cam'].astype(np.float64))
  outputs = {}
  for model in (work, work / 'export'):
    out = tmp_path / f'out_{model.name}'
    result = run('predict', f'--model={model}', f'--input={inputs}', f'--output={out}',
                 f'--pitch={pitch}', f'--roll={roll}', '--steps=10', '--mesh_resolution=32')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'picture' in result.stderr  # the unsupported class is named in a warning
    assert sorted(os.listdir(out)) == ['room_a', 'room_b']
    for name, record in records.items():
      _check_prediction(out / name, record)
    outputs[model.name] = json.loads((out / 'room_a' / 'boxes.json').read_text())
  # The bundle reproduces the workdir's model.
  for a, b in zip(outputs['work']['objects'], outputs['export']['objects']):
    np.testing.assert_allclose(a['center'] + a['size'], b['center'] + b['size'], atol=1e-4)


@pytest.mark.slow
def test_a_photo_and_its_detections_alone_give_a_scene_with_its_posterior(trained, scenes,
                                                                         tmp_path):
  """No cam_K.txt and no --pitch/--roll: K is the default field of view (the renders' own),
  the tilt is estimated from the image, and K = 3 samples give the consensus with spreads."""
  _, work = trained
  record = scenes[16]
  folder = tmp_path / 'photo'
  demo_input.write_demo_folder(str(folder), record)  # at the render's size: K is the default
  os.remove(folder / 'cam_K.txt')
  assert sorted(os.listdir(folder)) == ['detections.json', 'img.jpg']
  outputs = []
  for name in ('out', 'again'):
    out = tmp_path / name
    result = run('predict', f'--model={work}', f'--input={folder}', f'--output={out}',
                 '--samples=3', '--write_samples', '--steps=10', '--mesh_resolution=16')
    assert result.returncode == 0, result.stderr[-3000:]
    outputs.append(json.loads((out / 'boxes.json').read_text()))
  boxes = outputs[0]
  assert 'cam_K.txt: missing; K from no cam_K.txt and no EXIF' in result.stderr
  np.testing.assert_allclose(boxes['K'], record['K'], atol=1e-3)
  cam = boxes['camera']
  assert 'default field of view' in cam['K_source']
  assert cam['pitch_roll_source'] == 'estimated from the image'
  pitch, roll = np.degrees(camera.pitch_roll(record['world_to_cam'].astype(np.float64)))
  assert abs(cam['pitch_degrees'] - pitch) < 2 and abs(cam['roll_degrees'] - roll) < 2, cam
  np.testing.assert_allclose(boxes['world_to_cam'], camera.world_to_cam(
      np.radians(cam['pitch_degrees']), np.radians(cam['roll_degrees'])), atol=1e-6)
  # The posterior: each score is the agreement, in [1/K, 1]; the detector's score is kept.
  assert boxes['samples'] == 3
  for k, o in enumerate(boxes['objects']):
    assert o['score'] == o['posterior']['agreement'] and 1 / 3 - 1e-9 <= o['score'] <= 1 + 1e-9
    assert o['detection_score'] == pytest.approx(0.5 + 0.01 * k)
    assert o['posterior']['center_spread_m'] >= 0 and o['posterior']['yaw_spread_degrees'] >= 0
  # Deterministic for a seed.
  assert outputs[0]['objects'] == outputs[1]['objects']
  # Each sample's scene, and each consensus object is one of the samples' (the medoid).
  out = tmp_path / 'out'
  assert sorted(os.listdir(out / 'samples')) == [f'sample_{k:02d}.glb' for k in range(3)]
  assert sorted(boxes['files']) == sorted(
      [*(f for f in os.listdir(out) if f != 'samples'),
       *(f'samples/{f}' for f in os.listdir(out / 'samples'))])
  consensus_scene = trimesh.load(out / 'scene.glb')
  samples = [trimesh.load(out / 'samples' / f'sample_{k:02d}.glb') for k in range(3)]
  for k, o in enumerate(boxes['objects']):
    name = scene_files.object_name(k, CLASSES.index(o['class']))
    chosen = consensus_scene.geometry[name].bounds
    assert any(np.allclose(s.geometry[name].bounds, chosen, atol=1e-5) for s in samples), name


@pytest.mark.slow
def test_eval_scores_exactly_what_predict_and_the_bundle_ship(trained, tmp_path):
  """--mode=eval, predict's reconstruct and the bundle give bit-equal boxes and shape codes
  for the same scene and seed: one scene per eval batch (scene i is drawn with seed
  eval.seed + i), one sample."""
  root, work = trained
  result = run('main', '--config=configs/synthetic.py:smoke', f'--config.data_dir={root / "tfds"}',
               f'--workdir={work}', '--config.diffusion.eta=0.0', '--mode=eval',
               '--config.eval.batch_size=1', '--config.eval.num_samples=1',
               '--config.eval.num_scenes=2', '--config.eval.seed=5', '--config.eval.tag=one_path',
               '--config.eval.mesh_objects=0', '--config.eval.num_previews=0')
  assert result.returncode == 0, result.stderr[-3000:]
  scored = np.load(work / 'eval_one_path' / 'predictions.npz')
  assert scored['seed'].tolist() == [5, 6]

  from configs import synthetic
  from data_pipelines import registry
  from scenediff_jax.inference import trained_model
  config = synthetic.get_config('smoke')
  config.data_dir = str(root / 'tfds')
  source = registry.scene_builder(config, prepare=False).as_data_source('test')
  models = {'workdir': trained_model.load(str(work)),
            'bundle': trained_model.load(str(work / 'export'))}
  for i in range(2):
    record = source[int(scored['scene_index'][i])]
    o = record['objects']
    scene = demo_input.DemoInput(
        name=f'scene_{i}', image=record['image'], K=record['K'],
        world_to_cam=record['world_to_cam'], bbox2d=o['bbox2d'], classes=o['class'],
        scores=np.ones(len(o['class']), np.float32), original_image=record['image'],
        original_K=record['K'], original_bbox2d=o['bbox2d'], notes=[])
    n, seed = len(o['class']), int(scored['seed'][i])
    for name, model in models.items():
      out = tmp_path / f'{name}_{i}'
      predict.reconstruct(model, scene, str(out), seed=seed, steps=config.diffusion.sampling_steps,
                          guidance=config.diffusion.guidance_scale, mesh_resolution=16)
      written = json.loads((out / 'boxes.json').read_text())['objects']
      boxes = np.array([w['center'] + w['size'] + [w['yaw']] for w in written], np.float32)
      np.testing.assert_array_equal(boxes, scored['boxes'][i, :n], err_msg=name)
      # The shape codes, from the same call predict makes.
      sampled = model.sample_scene(trained_model.batch_inputs([trained_model.model_input(
          scene.image, scene.K, scene.world_to_cam, scene.bbox2d, scene.classes,
          model.max_objects)]), seed, config.diffusion.sampling_steps,
          config.diffusion.guidance_scale)
      for key in ('boxes', 'layout', 'gaussians', 'intrinsics'):
        np.testing.assert_array_equal(sampled[key][0], scored[key][i], err_msg=f'{name} {key}')


_LOAD_BUNDLE = '''
import sys
sys.path.insert(0, '.')  # the bundle folder (python -I leaves the working directory out)
import json
import numpy as np
import load_bundle
# The compiler options the package passes (compiler.options()), given here as JSON: with
# others, XLA picks other CPU kernels, and 7 guided DDIM steps drift apart by ~2e-5.
model = load_bundle.Bundle('.', compiler_options=json.loads(sys.argv[3]))
inputs = dict(np.load(sys.argv[1]))
out = model.sample_scene(inputs, seed=3, steps=7, guidance=2.0)
np.savez(sys.argv[2], **out)
assert not [m for m in sys.modules if m.split('.')[0] in ('flax', 'scenediff_jax', 'optax',
                                                          'orbax', 'ml_collections')]
print('OK')
'''


@pytest.mark.slow
def test_the_bundle_runs_in_a_fresh_process_without_the_package(trained, tmp_path):
  _, work = trained
  from scenediff_jax.inference import trained_model
  model = trained_model.load(str(work))
  (height, width), n = model.image_size, model.max_objects
  rng = np.random.default_rng(0)
  mask = np.zeros((3, n), bool)
  mask[:, :3] = True
  mask[1, :5] = True
  inputs = {'image': rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8),
            'K': np.stack([camera.intrinsics(200.0, (width - 1) / 2, (height - 1) / 2)] * 3
                          ).astype(np.float32),
            'world_to_cam': np.stack([camera.world_to_cam(0.1 * i, 0.0) for i in range(3)]
                                     ).astype(np.float32),
            'bbox2d': np.tile(np.array([10, 12, 40, 30], np.float32), (3, n, 1)),
            'class': rng.integers(0, len(CLASSES), (3, n)).astype(np.int32), 'mask': mask}
  np.savez(tmp_path / 'inputs.npz', **inputs)
  script = tmp_path / 'run_bundle.py'
  script.write_text(_LOAD_BUNDLE)
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  from scenediff_jax import compiler
  result = subprocess.run([sys.executable, '-I', str(script), str(tmp_path / 'inputs.npz'),
                           str(tmp_path / 'out.npz'), json.dumps(compiler.options())],
                          cwd=work / 'export', capture_output=True, text=True, timeout=300,
                          env=env)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
  exported = dict(np.load(tmp_path / 'out.npz'))
  expected = model.sample_scene(inputs, 3, 7, 2.0)
  assert sorted(exported) == sorted(expected)
  for key in expected:
    np.testing.assert_allclose(exported[key], expected[key], rtol=1e-5, atol=1e-5)
  # Guidance and steps are run-time inputs: they change the result.
  other = model.sample_scene(inputs, 3, 7, 1.0)
  assert not np.allclose(other['boxes'], expected['boxes'], atol=1e-3)


@pytest.mark.slow
def test_unconditional_samples_write_meshes_and_a_contact_sheet(trained, tmp_path):
  _, work = trained
  out = tmp_path / 'samples'
  result = run('sample', f'--model={work / "export"}', '--num=2', '--objects=3',
               f'--output={out}', '--steps=5', '--mesh_resolution=32')
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(out)) == ['contact_sheet.png', 'scene_000', 'scene_001']
  for scene in ('scene_000', 'scene_001'):
    files = sorted(os.listdir(out / scene))
    assert files == ['object_00.ply', 'object_01.ply', 'object_02.ply', 'scene.glb']
    glb = trimesh.load(out / scene / 'scene.glb')
    assert len(glb.geometry) == 3
    # Side by side on one floor: y-up bottoms at 0, no two footprints overlapping in x.
    bounds = sorted((g.bounds for g in glb.geometry.values()), key=lambda b: b[0][0])
    # Boxes stand on y = 0 and meshes stay inside the grid (±0.55 of a box): no bottom lies
    # more than the grid's margin below the floor. (A 20-step model's field need not reach
    # its box's bottom, so the bottoms are not all at 0.)
    assert all(b[0][1] >= -0.1 for b in bounds)
  sheet = Image.open(out / 'contact_sheet.png')
  assert sheet.size[1] == 2 * 128
