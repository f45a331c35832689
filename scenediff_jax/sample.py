"""Unconditional generation: `python -m scenediff_jax.sample --model=M --num=N --output=OUT`.

Draws N scenes from the null condition (no image, no detections) and writes, per scene,
OUT/scene_000/, scene_001/, … with one .ply per object (its shape at its sampled size and yaw,
centred on the origin, y down as in our world frame), scene.glb with the objects standing side
by side on one floor (glTF y-up), and OUT/contact_sheet.png with every shape.

Why side by side: an unconditional pose [δ, d, size, yaw] places an object relative to its
2D box, and without detections there is no box, so shapes, sizes and orientations are
sampled but positions in the room are not defined.
"""
import os

from absl import app, flags, logging
import numpy as np
from PIL import Image
import tqdm
import trimesh

from scenediff_jax import cli, compiler
from scenediff_jax.geometry import boxes as boxes_lib
from scenediff_jax.inference import point_render, scene_files, trained_model
from scenediff_jax.inference.atomic_dir import atomic_directory

_MODEL = flags.DEFINE_string('model', None, 'Training workdir or export bundle folder.')
_NUM = flags.DEFINE_integer('num', 4, 'How many scenes to draw.')
_OBJECTS = flags.DEFINE_integer('objects', 6, 'Objects per scene (at most the model\'s N_max).')
_OUTPUT = flags.DEFINE_string('output', None, 'Where the results go (created if missing).')
_STEPS = flags.DEFINE_integer('steps', None, 'DDIM steps (default: the model config\'s).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_CACHE = cli.define_compilation_cache_flag()
_MESH_RESOLUTION = flags.DEFINE_integer('mesh_resolution', 64, 'Marching-cubes cells per axis: '
                                        '16, 32, 64, 128 or 256.')
flags.mark_flags_as_required(['model', 'output'])

GAP = 0.3  # metres between neighbouring objects in scene.glb
TILE = 128  # pixels per shape in the contact sheet


def side_by_side(sizes, yaws):
  """World boxes [n, 7] standing on the floor y = 0 (y down), left to right along x."""
  extent = np.abs(np.cos(yaws)) * sizes[:, 0] + np.abs(np.sin(yaws)) * sizes[:, 2]
  x = np.cumsum(extent + GAP) - (extent + GAP) / 2
  x -= x.mean()
  return np.stack([x, -sizes[:, 1] / 2, np.zeros_like(x), *sizes.T, yaws], -1)


def write_scene(output_dir, meshes, boxes):
  placed = [boxes_lib.canonical_to_world(np.asarray(m.vertices), b) for m, b in zip(meshes, boxes)]
  with atomic_directory(output_dir) as staging:
    world = []
    for k, (mesh, vertices) in enumerate(zip(meshes, placed)):
      at_origin = mesh.copy()
      at_origin.vertices = vertices - boxes[k, :3]
      at_origin.export(os.path.join(staging, f'object_{k:02d}.ply'))
      mesh = mesh.copy()
      mesh.vertices = vertices
      world.append(mesh)
    scene_files.scene_glb(world, [f'object_{k:02d}' for k in range(len(world))]).export(
        os.path.join(staging, 'scene.glb'))


def contact_sheet(rows):
  """One row of shape renders per scene."""
  width = max(len(r) for r in rows) * TILE
  sheet = np.full((len(rows) * TILE, width), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, mesh in enumerate(row):
      sheet[i * TILE:(i + 1) * TILE, j * TILE:(j + 1) * TILE] = point_render.render_mesh(
          mesh, TILE, count=40_000)
  return Image.fromarray(sheet)


def check_flags():
  """Every flag checked before the model is loaded (its size is read without loading it);
  returns the model's trained_model.ModelSource."""
  cli.check_output_folder(_OUTPUT.value)
  cli.check_count('num', _NUM.value, 'scenes to draw')
  cli.check_mesh_resolution(_MESH_RESOLUTION.value)
  if _STEPS.value is not None:
    cli.check_count('steps', _STEPS.value, 'DDIM steps')
  source = trained_model.find_model(_MODEL.value)
  cli.check_count('objects', _OBJECTS.value, 'objects per scene; the model\'s N_max is the most',
                  most=source.max_objects)
  return source


def run():
  compiler.use_persistent_cache(_CACHE.value)
  model = trained_model.load(check_flags())
  mask = np.zeros((_NUM.value, model.max_objects), bool)
  mask[:, :_OBJECTS.value] = True
  drawn = model.sample_unconditional(mask, _SEED.value, _STEPS.value or model.sampling_steps)
  rows = []
  for i in tqdm.trange(_NUM.value, desc='sample', unit='scene'):
    meshes = model.object_meshes(drawn['gaussians'][i, :_OBJECTS.value],
                                 drawn['intrinsics'][i, :_OBJECTS.value], _MESH_RESOLUTION.value)
    for k, mesh in enumerate(meshes):
      if mesh is None:  # no surface in the decoder's field: its box stands in, as in predict
        logging.warning('scene %d, object %d: empty occupancy; writing its box', i, k)
        meshes[k] = trimesh.creation.box((1.0, 1.0, 1.0))
    pose = drawn['pose'][i, :_OBJECTS.value]
    boxes = side_by_side(np.maximum(pose[:, 3:6], 1e-2), pose[:, 6])
    write_scene(os.path.join(_OUTPUT.value, f'scene_{i:03d}'), meshes, boxes)
    rows.append(meshes)
  sheet = os.path.join(_OUTPUT.value, 'contact_sheet.png')
  contact_sheet(rows).save(sheet + '.tmp.png')  # renamed into place: never half a picture
  os.replace(sheet + '.tmp.png', sheet)
  logging.info('%d unconditional scenes written to %s', _NUM.value, _OUTPUT.value)


def main(argv):
  cli.run_program('sample', run, argv, (trained_model.ModelError, ValueError))


if __name__ == '__main__':
  app.run(main)
