"""One reconstructed scene on disk: scene.glb, per-object PLYs, boxes.json and preview.png
(and, when asked, samples/sample_XX.glb: each posterior sample's scene).

Frames:
  - boxes.json and every object_XX_<class>.ply are in our world frame W (DESIGN.md): origin at
    the camera centre, pitch and roll undone, x right, y down (gravity), z forward, metres.
  - scene.glb follows glTF's y-up convention. W is turned into it here, in `W_TO_GLTF` and
    nowhere else: (x, y, z) ↦ (x, −y, −z), a 180° rotation about x (det +1, so faces keep
    their winding and the result is still right-handed: glTF's +y is up, −z forward).

`write_scene` is all-or-nothing (a failed write leaves what was there untouched) and writes
into a folder that may hold the user's other files: the files are written to a hidden staging
folder inside it, then each is renamed into place, boxes.json last; only files of the same
names, and those a previous boxes.json of ours lists ("files"), are replaced or removed.
"""
import dataclasses
import errno
import json
import os
import re
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw
import trimesh

from scenediff_jax.geometry.boxes import EDGES, box_corners, canonical_to_world
from scenediff_jax.geometry.camera import scale_intrinsics
from scenediff_jax.geometry.classes import CLASSES
from scenediff_jax.inference.atomic_dir import remove_dead_staging
from scenediff_jax.inference.scene_preview import (
  LAYOUT_COLOUR,
  TOP_DOWN_BACKGROUND,
  _draw_wireframe,
  _top_down,
  captioned_row,
  class_colour,
  draw_wireframes,
)

# W (y down, z forward) → glTF (y up, z backward): 180° about x. Its own inverse.
W_TO_GLTF = np.diag([1.0, -1.0, -1.0, 1.0])
FRAME = ('W: camera centre at the origin with pitch and roll undone; x right, y down '
         '(gravity), z forward; metres. PLY files use W; scene.glb is glTF y-up: (x, -y, -z).')
TITLES = ('input + boxes', 'top-down', 'novel view')
NOVEL_EYE = (1.0, -1.5, -1.0)  # metres in W: right of, 1.5 m above and 1 m behind the camera
MAX_PANEL_SIZE = 1024  # pixels: a 6000×4000 photo gets a 1024×683 preview panel, not 6000×4000
STAGING_PREFIX = '.predict-tmp-'  # + '<pid>-<random>': a killed run's is recognised and removed
BACKUP = '.previous'  # in a staging folder: the files a write replaces, until it is done
# What write_scene may replace or remove: its own file names, never a path elsewhere.
OUTPUT_FILE = re.compile(r'object_[0-9]+_\w+\.ply|scene\.glb|preview\.png|boxes\.json|'
                         r'samples/sample_[0-9]+\.glb')
SAMPLES = 'samples'  # the folder of the posterior samples' GLBs


@dataclasses.dataclass
class SceneObject:
  class_index: int  # index into scenediff_jax.geometry.classes.CLASSES
  score: float
  bbox2d: np.ndarray  # [4] (x1, y1, x2, y2) pixels of the original image
  box: np.ndarray  # [7] world box
  mesh: trimesh.Trimesh | None  # canonical frame [-0.5, 0.5]^3; None when meshing failed
  # With K > 1 posterior samples: consensus.spread's figures of this object, and the
  # detector's score (`score` is then the agreement).
  posterior: dict | None = None
  detection_score: float | None = None


def object_name(k, class_index):
  """`object_<k:02d>_<class>`: node name in scene.glb and stem of the PLY file."""
  return f'object_{k:02d}_{CLASSES[int(class_index)]}'


def _has_faces(mesh):
  return mesh is not None and len(mesh.faces) > 0


def world_mesh(obj: SceneObject) -> trimesh.Trimesh:
  """The object's mesh (or, without one, its box) placed in W and coloured by class."""
  canonical = obj.mesh if _has_faces(obj.mesh) else trimesh.creation.box(extents=(1, 1, 1))
  box = np.asarray(obj.box, np.float64)
  vertices = canonical_to_world(np.asarray(canonical.vertices, np.float64), box)
  mesh = trimesh.Trimesh(vertices, np.asarray(canonical.faces), process=False)
  mesh.visual.face_colors = (*class_colour(obj.class_index), 255)
  return mesh


def _layout_path(layout):
  """The room box as a Path3D of its 12 edges (exported to GLB as GL_LINES)."""
  corners = box_corners(np.asarray(layout, np.float64))
  return trimesh.load_path(corners[np.array(EDGES)])


def scene_glb(meshes_world, names, layout=None) -> trimesh.Scene:
  """A glTF-ready scene: meshes (W) and the layout wireframe, all turned y-up."""
  scene = trimesh.Scene()
  for mesh, name in zip(meshes_world, names):
    mesh = mesh.copy()
    mesh.apply_transform(W_TO_GLTF)  # baked into the vertices: nodes keep identity transforms
    scene.add_geometry(mesh, node_name=name, geom_name=name)
  if layout is not None:
    path = _layout_path(layout)
    path.apply_transform(W_TO_GLTF)
    scene.add_geometry(path, node_name='layout', geom_name='layout')
  return scene


def _look_at(eye, target):
  """world_to_cam rotation of a camera at `eye` looking at `target`, image y along gravity."""
  forward = np.asarray(target, np.float64) - eye
  forward /= np.linalg.norm(forward)
  right = np.cross([0.0, 1.0, 0.0], forward)  # x = y × z, with y down
  if np.linalg.norm(right) < 1e-6:  # looking straight up or down: any right will do
    right = np.array([1.0, 0.0, 0.0])
  right /= np.linalg.norm(right)
  return np.stack([right, np.cross(forward, right), forward])


def novel_view(meshes_world, classes, size, *, layout=None, target=None, eye=NOVEL_EYE,
               max_count=200_000, seed=0, margin=0.1) -> Image.Image:
  """The meshes (W) as a z-buffered splat of surface samples, seen from `eye` towards `target`.

  Points are coloured by class and shaded by |normal · view direction| plus a light from
  above (|normal_y|), so faces at an angle stay apart; the focal length is
  chosen so that every mesh fits in `size` = (w, h). `target` defaults to the meshes' mean
  bounds centre. Samples are drawn with a fixed `seed`, so the image is reproducible. numpy
  and PIL only.
  """
  w, h = size
  eye = np.asarray(eye, np.float64)
  meshes = [(m, c) for m, c in zip(meshes_world, classes) if _has_faces(m)]
  if target is None:
    target = (np.mean([m.bounds.mean(0) for m, _ in meshes], 0) if meshes else
              np.zeros(3) if layout is None else np.asarray(layout, np.float64)[:3])
  R = _look_at(eye, target)
  panel = Image.new('RGB', (w, h), TOP_DOWN_BACKGROUND)

  # Focal length: the widest field of view any mesh's bounds need, in front of the camera.
  corners = np.concatenate([trimesh.bounds.corners(m.bounds) for m, _ in meshes] +
                           [np.zeros((0, 3))]) - eye
  pc = corners @ R.T
  pc = pc[pc[:, 2] > 0.05]
  focal = float(w)
  if len(pc):
    tangent = np.abs(pc[:, :2] / pc[:, 2:3]).max(0)
    focal = min((0.5 - margin) * w / max(tangent[0], 1e-6),
                (0.5 - margin) * h / max(tangent[1], 1e-6))
  K = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]])

  if layout is not None:  # first, under the points; shifting the box puts the eye at 0
    shifted = np.asarray(layout, np.float64).copy()
    shifted[:3] -= eye
    _draw_wireframe(ImageDraw.Draw(panel), shifted, K, R, (w, h), LAYOUT_COLOUR, 1)
  if not meshes:
    return panel

  xyz, rgb = [], []
  for m, c in meshes:
    # Enough samples for ~3 per covered pixel (judged at the mesh's nearest possible point),
    # so that the 2×2 splats leave no holes; capped by `max_count`.
    near = max(np.linalg.norm(m.bounds.mean(0) - eye) - np.linalg.norm(np.ptp(m.bounds, 0)) / 2,
               0.3)
    count = int(np.clip(3 * m.area * (focal / near) ** 2, 1_000, max_count))
    points, face = trimesh.sample.sample_surface(m, count, seed=seed)
    view = points - eye
    view /= np.linalg.norm(view, axis=1, keepdims=True) + 1e-12
    normal = m.face_normals[face]  # abs(): decoded meshes may have either orientation
    shade = 0.25 + 0.5 * np.abs(np.sum(normal * view, 1)) + 0.25 * np.abs(normal[:, 1])
    xyz.append(points)
    rgb.append(shade[:, None] * np.asarray(class_colour(c), np.float64))
  pc = (np.concatenate(xyz) - eye) @ R.T
  rgb = np.concatenate(rgb)
  front = pc[:, 2] > 0.05
  pc, rgb = pc[front], rgb[front]
  uv = np.round((pc @ K.T)[:, :2] / pc[:, 2:3]).astype(np.int64)
  # 2×2 splats close the gaps; all four offsets share one z-order, so that no far point's
  # splat covers a nearer one.
  uv = np.concatenate([uv + offset for offset in ((0, 0), (1, 0), (0, 1), (1, 1))])
  z, rgb = np.tile(pc[:, 2], 4), np.tile(rgb, (4, 1))
  inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
  uv, z, rgb = uv[inside], z[inside], rgb[inside]
  order = np.argsort(-z, kind='stable')  # far first, so nearer points overwrite them
  image = np.asarray(panel).copy()
  image[uv[order, 1], uv[order, 0]] = np.round(rgb[order]).astype(np.uint8)
  return Image.fromarray(image)


def preview(image, K, world_to_cam, meshes_world, boxes, classes, layout=None,
            line_width=2, sample_boxes=None) -> Image.Image:
  """Input with box wireframes | top-down | novel view, each the input's size (downscaled to
  at most MAX_PANEL_SIZE a side, with K), captioned; `sample_boxes` [K, n, 7], the posterior
  samples of the n boxes, are drawn faintly behind them in the first two panels."""
  image = np.asarray(image, np.uint8)
  h, w = image.shape[:2]
  K, R = np.asarray(K, np.float64), np.asarray(world_to_cam, np.float64)
  scale = MAX_PANEL_SIZE / max(h, w)
  if scale < 1:  # the 3D boxes project through K, so scaling K scales them with the image
    w, h = max(round(w * scale), 1), max(round(h * scale), 1)
    K = scale_intrinsics(K, w / image.shape[1], h / image.shape[0])
    image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR), np.uint8)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
  classes = np.asarray(classes, np.int64).reshape(-1)

  faint = None if sample_boxes is None else np.asarray(sample_boxes, np.float64).reshape(
      -1, len(boxes), 7)
  wire = draw_wireframes(image, K, R, boxes, classes, layout, line_width, faint_boxes=faint)
  top = _top_down((w, h), K, np.zeros((0, 7)), np.zeros(0, np.int64), boxes, classes, None,
                  layout, faint_boxes=faint)
  target = boxes[:, :3].mean(0) if len(boxes) else None
  novel = novel_view(meshes_world, classes, (w, h), layout=layout, target=target)

  return captioned_row((wire, top, novel), TITLES)


def _floats(a):
  return np.asarray(a, np.float64).tolist()


def _object_json(o):
  record = {
      'class': CLASSES[int(o.class_index)],
      'score': float(o.score),
      'bbox2d': _floats(np.reshape(o.bbox2d, 4)),
      'center': _floats(np.asarray(o.box)[:3]),
      'size': _floats(np.asarray(o.box)[3:6]),
      'yaw': float(np.asarray(o.box)[6]),
      'mesh': 'shape' if _has_faces(o.mesh) else 'box',
  }
  if o.posterior is not None:
    record['detection_score'] = float(o.detection_score)
    record['posterior'] = {
        'agreement': float(o.posterior['agreement']),
        'center_spread_m': float(o.posterior['center_spread']),
        'yaw_spread_degrees': float(o.posterior['yaw_spread'])}
  return record


def boxes_json(objects, layout, K, world_to_cam, camera=None, samples=1):
  """DESIGN.md's boxes.json, plus "K", "frame", "camera" (where K, pitch and roll came from)
  and "samples" (how many posterior samples the scene is the consensus of); "mesh" is
  "shape" or "box" (fallback). With samples > 1 each object's "score" is its agreement and
  "posterior" holds its spreads."""
  layout = None if layout is None else np.asarray(layout, np.float64)
  return {
      'objects': [_object_json(o) for o in objects],
      'layout': None if layout is None else {
          'center': _floats(layout[:3]), 'size': _floats(layout[3:6]), 'yaw': float(layout[6])},
      'world_to_cam': _floats(np.reshape(world_to_cam, (3, 3))),
      'K': _floats(np.reshape(K, (3, 3))),
      'camera': camera or {},
      'samples': int(samples),
      'frame': FRAME,
  }


def _write_contents(directory, image, K, world_to_cam, objects, layout, camera=None,
                    sample_boxes=None, sample_scenes=None):
  """Writes the scene's files into `directory`; returns their names, boxes.json last. boxes.json
  records them as "files": what a later write may remove."""
  names = [object_name(k, o.class_index) for k, o in enumerate(objects)]
  files = [f'{name}.ply' for name in names] + ['scene.glb', 'preview.png']
  meshes = [world_mesh(o) for o in objects]
  for mesh, name in zip(meshes, names):
    mesh.export(os.path.join(directory, f'{name}.ply'))
  scene_glb(meshes, names, layout).export(os.path.join(directory, 'scene.glb'))
  for k, (sample_objects, sample_layout) in enumerate(sample_scenes or ()):
    os.makedirs(os.path.join(directory, SAMPLES), exist_ok=True)
    files.append(f'{SAMPLES}/sample_{k:02d}.glb')
    scene_glb([world_mesh(o) for o in sample_objects], names, sample_layout).export(
        os.path.join(directory, files[-1]))
  files.append('boxes.json')
  samples = 1 if sample_boxes is None else len(sample_boxes)
  record = {**boxes_json(objects, layout, K, world_to_cam, camera, samples), 'files': files}
  with open(os.path.join(directory, 'boxes.json'), 'w') as f:
    json.dump(record, f, indent=1)
  boxes = np.array([np.asarray(o.box, np.float64) for o in objects]).reshape(-1, 7)
  classes = [o.class_index for o in objects]
  preview(image, K, world_to_cam, meshes, boxes, classes, layout,
          sample_boxes=sample_boxes).save(os.path.join(directory, 'preview.png'))
  return files


def _previous_files(output_dir):
  """The files a previous write_scene listed in output_dir/boxes.json (only our own file
  names; nothing when there is no such list, e.g. a boxes.json of someone else's)."""
  try:
    with open(os.path.join(output_dir, 'boxes.json')) as f:
      files = json.load(f).get('files')
  except (OSError, ValueError, RecursionError, AttributeError):
    return []
  if not isinstance(files, list):
    return []
  return [f for f in files if isinstance(f, str) and OUTPUT_FILE.fullmatch(f)]


def _missing_folders(path):
  """The folders os.makedirs(path) would create, outermost first."""
  missing = []
  while not os.path.lexists(path) and os.path.dirname(path) != path:
    missing.insert(0, path)
    path = os.path.dirname(path)
  return missing


def _commit(staging, output_dir, files, stale):
  """Renames `files` from staging into output_dir (boxes.json, the last, commits) and
  removes `stale`; what they replace or remove is first renamed into staging/.previous, so
  that any failure puts everything back as it was."""
  backup = os.path.join(staging, BACKUP)
  os.mkdir(backup)
  done = []  # (name, a previous file was moved aside, the new one was moved in)
  made = []  # the sub-folders (samples/) this commit created, for the rollback
  try:
    for folder in sorted({os.path.dirname(n) for n in [*stale, *files]} - {''}):
      os.makedirs(os.path.join(backup, folder), exist_ok=True)
      if not os.path.isdir(os.path.join(output_dir, folder)):
        os.mkdir(os.path.join(output_dir, folder))
        made.append(os.path.join(output_dir, folder))
    for name in [*stale, *files]:
      target = os.path.join(output_dir, name)
      if os.path.isdir(target) and not os.path.islink(target):  # the user's folder, not ours
        if name in stale:
          continue
        raise IsADirectoryError(errno.EISDIR, f'a folder is in the way of {name}', target)
      had = os.path.lexists(target)
      if had:
        os.rename(target, os.path.join(backup, name))
      done.append([name, had, False])
      if name in files:
        os.rename(os.path.join(staging, name), target)
        done[-1][2] = True
  except BaseException:
    for name, had, moved_in in reversed(done):
      target = os.path.join(output_dir, name)
      if moved_in:
        os.remove(target)
      if had:
        os.rename(os.path.join(backup, name), target)
    for folder in made:
      os.rmdir(folder)
    raise


def write_scene(output_dir, *, image, K, world_to_cam, objects: list[SceneObject],
                layout, camera=None, sample_boxes=None, sample_scenes=None) -> str:
  """Writes scene.glb, object_<k:02d>_<class>.ply, boxes.json and preview.png into output_dir
  (created if missing), leaving every other file there alone.

  The files are written to a hidden `.predict-tmp-<pid>-<random>` folder inside output_dir
  (the same file system, so moving them is a rename), then each replaces the file of its name,
  boxes.json last. boxes.json lists them ("files"); files that a previous boxes.json listed and
  this scene does not write (object PLYs of a scene with more objects) are removed. On any
  exception output_dir is left as it was (and removed again if this call created it). Staging
  folders of dead processes (a killed run) are removed on entry.

  Args:
    output_dir: the folder to write into.
    image: uint8 [H, W, 3], the original image.
    K: its 3×3 intrinsics.
    world_to_cam: 3×3 (X_c = R · X_w).
    objects: the scene's objects; those without a mesh get their box as one.
    layout: the room box [7], or None.
    camera: where K, pitch and roll came from (DemoInput.camera), for boxes.json.
    sample_boxes: [K, n, 7] the posterior samples' boxes the objects are the consensus of
      (drawn faintly in the preview), or None for one sample.
    sample_scenes: optional K (objects, layout) pairs written as samples/sample_XX.glb.
  Returns:
    output_dir.
  """
  output_dir = os.fspath(output_dir)
  created = _missing_folders(os.path.abspath(output_dir))
  try:
    os.makedirs(output_dir, exist_ok=True)
    remove_dead_staging(output_dir, STAGING_PREFIX, backup=BACKUP)  # a killed run's files back
    staging = tempfile.mkdtemp(prefix=f'{STAGING_PREFIX}{os.getpid()}-', dir=output_dir)
    try:
      files = _write_contents(staging, image, K, world_to_cam, objects, layout, camera,
                              sample_boxes, sample_scenes)
      stale = [f for f in dict.fromkeys(_previous_files(output_dir)) if f not in files]
      _commit(staging, output_dir, files, stale)
    finally:
      shutil.rmtree(staging, ignore_errors=True)
  except BaseException:
    for folder in reversed(created):  # only the folders this call made, and only if empty
      try:
        os.rmdir(folder)
      except OSError:
        break
    raise
  return output_dir
