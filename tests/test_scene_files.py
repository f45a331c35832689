"""write_scene puts every file where the world frame says, in y-up only inside scene.glb, and
never leaves a half-written or damaged output folder behind."""
import json
import os

import numpy as np
from PIL import Image
import pytest
import trimesh

from scenediff_jax.geometry.boxes import EDGES, box_corners, canonical_to_world, points_in_box
from scenediff_jax.geometry.camera import world_to_cam
from scenediff_jax.inference import scene_files as sf
from scenediff_jax.inference.scene_preview import CAPTION, CLASS_COLOURS, GAP, TOP_DOWN_BACKGROUND

H, W = 120, 160
K = np.array([[110.0, 0, 79.5], [0, 110.0, 59.5], [0, 0, 1]])
R = world_to_cam(0.12, 0.04)
GREY = np.full((H, W, 3), 128, np.uint8)
LAYOUT = np.array([0.1, 0.2, 3.0, 5.0, 2.8, 6.0, 0.1])
# Non-cubic sizes and non-zero yaws, so a forgotten yaw, size or frame flip shows.
BOXES = np.array([[-0.8, 0.9, 3.5, 1.6, 0.6, 2.0, 0.7],
                  [0.9, 1.0, 3.0, 0.5, 0.9, 0.4, -0.4],
                  [0.2, 0.5, 4.5, 0.3, 0.5, 0.6, 1.2]])
CLASS_INDICES = (0, 1, 9)
NAMES = ('object_00_bed', 'object_01_chair', 'object_02_lamp')


def _objects():
  cube = trimesh.creation.box(extents=(1, 1, 1))
  sphere = trimesh.creation.icosphere(subdivisions=1)
  sphere.apply_scale(0.5)
  return [sf.SceneObject(c, s, np.array(b2d, float), box, mesh) for c, s, b2d, box, mesh in zip(
      CLASS_INDICES, (0.9, 0.75, 0.5), ((10, 20, 80, 100), (90, 30, 120, 90), (60, 40, 70, 60)),
      BOXES, (cube, sphere, None))]


def _write(output_dir, objects=None):
  return sf.write_scene(output_dir, image=GREY, K=K, world_to_cam=R,
                        objects=_objects() if objects is None else objects, layout=LAYOUT)


@pytest.fixture(scope='module')
def scene_dir(tmp_path_factory):
  output_dir = str(tmp_path_factory.mktemp('predict') / 'scene')
  assert _write(output_dir) == output_dir
  return output_dir


def _from_gltf(points):
  """glTF y-up back to W, written out independently of the module: (x, y, z) ↦ (x, −y, −z)."""
  return np.asarray(points, np.float64) * [1.0, -1.0, -1.0]


def _loaded_world(scene, name):
  """A loaded node's vertices in W, with its node transform applied."""
  transform, geometry_name = scene.graph[name]
  geometry = scene.geometry[geometry_name]
  return _from_gltf(trimesh.transform_points(geometry.vertices, transform)), geometry


def _same_point_sets(a, b, atol):
  distance = np.linalg.norm(a[:, None] - b[None], axis=-1)
  return distance.min(1).max() < atol and distance.min(0).max() < atol


def test_all_files_exist(scene_dir):
  assert sorted(os.listdir(scene_dir)) == sorted(
      ['scene.glb', 'boxes.json', 'preview.png'] + [f'{n}.ply' for n in NAMES])


def test_glb_objects_lie_in_their_boxes_after_y_up_round_trip(scene_dir):
  scene = trimesh.load(os.path.join(scene_dir, 'scene.glb'))
  assert isinstance(scene, trimesh.Scene)
  assert sorted(scene.graph.nodes_geometry) == sorted(NAMES + ('layout',))
  for name, box, c in zip(NAMES, BOXES, CLASS_INDICES):
    vertices, mesh = _loaded_world(scene, name)
    assert points_in_box(vertices, box, inflate=1e-3).all(), name
    colours = mesh.visual.vertex_colors[:, :3]
    assert (colours == CLASS_COLOURS[c]).all(), name
  # The unit cube (and the lamp's fallback box) fill their boxes exactly.
  for name, box in ((NAMES[0], BOXES[0]), (NAMES[2], BOXES[2])):
    vertices, _ = _loaded_world(scene, name)
    assert _same_point_sets(vertices, box_corners(box), 1e-4), name
    np.testing.assert_allclose(np.stack([vertices.min(0), vertices.max(0)]),
                               np.stack([box_corners(box).min(0), box_corners(box).max(0)]),
                               atol=1e-4)


def test_glb_layout_wireframe_has_the_room_edges(scene_dir):
  scene = trimesh.load(os.path.join(scene_dir, 'scene.glb'))
  vertices, path = _loaded_world(scene, 'layout')
  assert isinstance(path, trimesh.path.Path3D)
  corners = box_corners(LAYOUT)
  assert _same_point_sets(vertices, corners, 1e-4)
  # GL_LINES: consecutive vertex pairs are the segments; they must be the box's 12 edges.
  index = np.linalg.norm(vertices[:, None] - corners[None], axis=-1).argmin(1)
  segments = {frozenset(pair) for pair in index.reshape(-1, 2).tolist()}
  assert segments == {frozenset(e) for e in EDGES}


def test_ply_files_are_in_the_world_frame(scene_dir):
  box_mesh = trimesh.creation.box(extents=(1, 1, 1))
  for name, obj in zip(NAMES, _objects()):
    ply = trimesh.load(os.path.join(scene_dir, f'{name}.ply'), process=False)
    canonical = obj.mesh if obj.mesh is not None else box_mesh
    np.testing.assert_allclose(ply.vertices, canonical_to_world(canonical.vertices, obj.box),
                               atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(ply.faces, canonical.faces)


def test_boxes_json_matches_the_inputs(scene_dir):
  with open(os.path.join(scene_dir, 'boxes.json')) as f:
    record = json.load(f)
  assert set(record) == {'objects', 'layout', 'world_to_cam', 'K', 'camera', 'samples', 'frame',
                         'files'}
  assert record['samples'] == 1 and record['camera'] == {}
  assert sorted(record['files']) == sorted(os.listdir(scene_dir))
  assert isinstance(record['frame'], str)
  assert [o['class'] for o in record['objects']] == ['bed', 'chair', 'lamp']
  assert [o['mesh'] for o in record['objects']] == ['shape', 'shape', 'box']
  for entry, obj in zip(record['objects'], _objects()):
    assert set(entry) == {'class', 'score', 'bbox2d', 'center', 'size', 'yaw', 'mesh'}
    assert entry['score'] == pytest.approx(obj.score)
    np.testing.assert_allclose(entry['bbox2d'], obj.bbox2d)
    np.testing.assert_allclose(entry['center'] + entry['size'] + [entry['yaw']], obj.box)
  layout = record['layout']
  np.testing.assert_allclose(layout['center'] + layout['size'] + [layout['yaw']], LAYOUT)
  np.testing.assert_array_equal(np.array(record['world_to_cam']), R)
  np.testing.assert_array_equal(np.array(record['K']), K)


def _panel(preview, k):
  return preview[CAPTION:, k * (W + GAP):k * (W + GAP) + W]


def test_preview_panels(scene_dir):
  preview = np.asarray(Image.open(os.path.join(scene_dir, 'preview.png')).convert('RGB'))
  assert preview.shape == (H + CAPTION, 3 * W + 2 * GAP, 3)
  # Panel 1: the bed's vertical edge 0–4, projected independently, is drawn over the image.
  midpoint = box_corners(BOXES[0])[[0, 4]].mean(0)
  camera = R @ midpoint
  u, v = np.round((K @ camera)[:2] / camera[2]).astype(int)
  assert 1 <= u < W - 1 and 1 <= v < H - 1
  window = _panel(preview, 0)[v - 1:v + 2, u - 1:u + 2]
  assert np.any(window != GREY[:3, :3])
  # Panel 3: points in the bed's class colour (shaded, so compare hue-like ratios) are there.
  novel = _panel(preview, 2).astype(np.float64)
  background = np.all(novel == TOP_DOWN_BACKGROUND, -1)
  assert (~background).sum() > 200
  bed = np.array(CLASS_COLOURS[0], np.float64)
  ratio = novel / np.maximum(novel.max(-1, keepdims=True), 1)
  assert (np.abs(ratio - bed / bed.max()).max(-1) < 0.05).sum() > 100


def _raise_on_save(*args, **kwargs):
  raise RuntimeError('disk full')


def _hidden(parent):
  return [n for n in os.listdir(parent) if n.startswith('.')]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(Image.Image, 'save', _raise_on_save)
  output_dir = tmp_path / 'scene'
  with pytest.raises(RuntimeError, match='disk full'):
    _write(str(output_dir))
  assert not output_dir.exists()
  assert _hidden(tmp_path) == []


def test_failed_write_keeps_the_previous_output(tmp_path, monkeypatch):
  output_dir = str(tmp_path / 'scene')
  _write(output_dir)
  before = {n: open(os.path.join(output_dir, n), 'rb').read() for n in os.listdir(output_dir)}
  monkeypatch.setattr(Image.Image, 'save', _raise_on_save)
  with pytest.raises(RuntimeError, match='disk full'):
    _write(output_dir, _objects()[:1])
  after = {n: open(os.path.join(output_dir, n), 'rb').read() for n in os.listdir(output_dir)}
  assert after == before
  assert _hidden(tmp_path) == []


def test_rewrite_keeps_other_files_and_drops_only_its_own_stale_ones(tmp_path):
  output_dir = tmp_path / 'scene'
  output_dir.mkdir()
  (output_dir / 'notes.txt').write_text('the user\'s')
  _write(str(output_dir))
  _write(str(output_dir), _objects()[2:])
  assert sorted(os.listdir(output_dir)) == ['boxes.json', 'notes.txt', 'object_00_lamp.ply',
                                            'preview.png', 'scene.glb']
  assert _hidden(output_dir) == []
