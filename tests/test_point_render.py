"""Point-splat previews draw the shape where it is and shade by orientation."""
import numpy as np
import trimesh

from scenediff_jax.inference import point_render


def test_box_is_drawn_in_the_middle_with_shaded_faces():
  image = point_render.render_mesh(trimesh.creation.box(extents=(0.6, 0.6, 0.6)), size=96)
  assert image.shape == (96, 96)
  assert np.all(image[:5, :5] == 255) and np.all(image[-5:, -5:] == 255)  # background
  centre = image[30:66, 30:66]
  assert np.mean(centre < 255) > 0.95  # covered: no speckle gaps
  assert len(np.unique(centre // 16)) >= 2  # different faces, different shades
  empty = point_render.render_mesh(trimesh.Trimesh(), size=32)
  assert np.all(empty == 255)


def test_side_by_side_layout():
  box = trimesh.creation.box()
  sheet = point_render.side_by_side([(np.zeros((10, 3)), box, box)] * 2, size=40, gap=4)
  assert sheet.size == (3 * 40 + 2 * 4, 2 * 40 + 4)
