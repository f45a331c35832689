"""Scene previews draw boxes, points and footprints where the camera and the world put them."""
import itertools

import numpy as np
from PIL import Image

from scenediff_jax.inference import scene_preview as sp

H, W = 120, 160
FOCAL, CX, CY = 100.0, 80.0, 60.0
K = np.array([[FOCAL, 0, CX], [0, FOCAL, CY], [0, 0, 1]])
GREY = np.full((H, W, 3), 128, np.uint8)
NO_BOXES = np.zeros((0, 7))


def _panel(preview, k):
  """Panel k (0 input, 1 ground truth, 2 prediction, 3 top-down) without its caption."""
  a = np.asarray(preview)
  return a[sp.CAPTION:, k * (W + sp.GAP):k * (W + sp.GAP) + W]


def _changed(panel, base=GREY):
  return np.any(panel != base, axis=-1)


def _pixel(point_camera):
  """Independent pinhole projection of a camera-frame point (may be behind: naive)."""
  x, y, z = point_camera
  return FOCAL * x / z + CX, FOCAL * y / z + CY


def _preview(gt=NO_BOXES, gt_classes=(), pred=NO_BOXES, pred_classes=(), R=np.eye(3), **kw):
  with np.errstate(divide='raise', invalid='raise', over='raise'):
    return sp.scene_preview(GREY, K, R, np.asarray(gt, float), np.asarray(gt_classes, int),
                            np.asarray(pred, float), np.asarray(pred_classes, int), **kw)


def test_size_captions_and_input_panel():
  room = np.array([0.0, 0.0, 2.0, 6.0, 3.0, 8.0, 0.0])  # the camera stands inside it
  preview = _preview(gt_layout=room, pred_layout=room)
  assert preview.size == (4 * W + 3 * sp.GAP, H + sp.CAPTION)
  assert np.array_equal(_panel(preview, 0), GREY)
  caption = np.asarray(preview)[:sp.CAPTION, :W]
  assert np.any(caption < 100)  # text on the white strip
  layout_pixels = np.all(_panel(preview, 1) == sp.LAYOUT_COLOUR, axis=-1)
  assert layout_pixels.sum() > 50  # the room's visible edges


def test_box_in_front_is_drawn_at_its_projected_corners_only():
  pitch = 0.15  # camera looks down a little: X_c = R_x(pitch) · X_w
  c, s = np.cos(pitch), np.sin(pitch)
  R = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
  centre, size = np.array([0.3, 0.2, 4.0]), np.array([1.0, 0.8, 1.2])
  corners = [centre + np.array(sign) * size / 2 for sign in itertools.product((-1, 1), repeat=3)]
  pixels = np.array([_pixel(R @ corner) for corner in corners])
  assert np.all((pixels > 5) & (pixels < [W - 5, H - 5]))  # the test's own premise
  panel = _panel(_preview([[*centre, *size, 0.0]], [3], R=R), 1)
  changed = _changed(panel)
  for u, v in np.round(pixels).astype(int):
    assert changed[v - 2:v + 3, u - 2:u + 3].any()
  lo, hi = np.floor(pixels.min(0)).astype(int) - 3, np.ceil(pixels.max(0)).astype(int) + 3
  outside = np.ones((H, W), bool)
  outside[lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = False
  assert not changed[outside].any()
  assert np.all(panel[changed] == sp.CLASS_COLOURS[3])


def test_edges_behind_the_camera_are_clipped_not_mirrored():
  # Up and to the left, reaching from z = -2 (behind) to z = 3; the naive projection of the
  # behind corners mirrors them into the lower right of the image.
  box = np.array([-1.0, -0.5, 0.5, 0.6, 0.4, 5.0, 0.0])
  behind = [np.array([x, y, -2.0]) for x in (-1.3, -0.7) for y in (-0.7, -0.3)]
  naive = np.array([_pixel(p) for p in behind])
  assert np.all((naive > [100, 70]) & (naive < [W, H]))  # premise: they would land inside
  changed = _changed(_panel(_preview([box], [0]), 1))
  assert changed.any()  # the part in front is drawn
  assert changed[:, :3].any()  # and the clipped long edges run on out of the left border
  assert not changed[70:, 100:].any()
  # A corner exactly on the camera plane neither divides by zero nor crashes.
  _preview([[0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]], [1])


def test_points_behind_the_camera_are_dropped_and_front_points_land_on_their_pixel():
  front, behind = np.array([0.4, 0.2, 2.0]), np.array([0.4, 0.2, -2.0])
  far_off = np.array([5.0, 0.0, 2.0])  # projects outside the image: ignored
  tiny = np.array([[-1.5, -0.8, 3.0, 0.05, 0.05, 0.05, 0.0]])
  preview = _preview(pred=tiny, pred_classes=[4], pred_points=[np.stack([front, behind, far_off])])
  panel = _panel(preview, 2)
  u, v = np.round(_pixel(front)).astype(int)
  nu, nv = np.round(_pixel(behind)).astype(int)
  assert (u, v) == (100, 70) and (nu, nv) == (60, 50)
  colour, grey = np.array(sp.CLASS_COLOURS[4]), GREY[0, 0].astype(float)
  drawn = panel[v, u].astype(float)
  # Blended: moved toward the class colour but not opaque.
  assert np.linalg.norm(drawn - colour) < np.linalg.norm(grey - colour) * 0.6
  assert not np.array_equal(panel[v, u], colour)
  changed = _changed(panel)
  assert not changed[nv, nu]
  expected = np.zeros((H, W), bool)
  expected[v, u] = True  # the tiny box sits up-left, outside this window
  assert np.array_equal(changed[40:, 40:], expected[40:, 40:])


def test_top_down_puts_right_boxes_right_and_far_boxes_high():
  boxes = np.array([[2.0, 0.0, 4.0, 0.6, 0.6, 0.6, 0.3],    # right of the camera
                    [0.0, 0.0, 8.0, 0.6, 0.6, 0.6, 0.0],    # far
                    [-0.5, 0.0, 2.0, 0.6, 0.6, 0.6, 0.0]])  # near
  preview = _preview(pred=boxes, pred_classes=[0, 1, 2])
  panel = _panel(preview, 3)
  where = [np.argwhere(np.all(panel == sp.CLASS_COLOURS[c], axis=-1)) for c in range(3)]
  assert all(len(w) > 10 for w in where)
  assert where[0][:, 1].min() > W / 2  # rows, columns: right of the centre line
  assert where[1][:, 0].mean() < where[2][:, 0].mean()  # far is higher up
  camera = np.argwhere(np.all(panel == 255, axis=-1))
  assert abs(camera[:, 1].mean() - W / 2) < W / 4  # the frustum (and scale bar) drawn


def test_classes_get_different_colours():
  assert len(sp.CLASS_COLOURS) == 10 and len(set(sp.CLASS_COLOURS)) == 10
  assert sp.LAYOUT_COLOUR not in sp.CLASS_COLOURS
  left, right = [-1.0, 0.0, 4.0, 0.8, 0.8, 0.8, 0.0], [1.0, 0.0, 4.0, 0.8, 0.8, 0.8, 0.0]
  panel = _panel(_preview([left, right], [0, 5]), 1)
  changed = _changed(panel)
  colours_left = {tuple(p) for p in panel[:, :W // 2][changed[:, :W // 2]]}
  colours_right = {tuple(p) for p in panel[:, W // 2:][changed[:, W // 2:]]}
  assert colours_left == {sp.CLASS_COLOURS[0]} and colours_right == {sp.CLASS_COLOURS[5]}


def test_save_previews(tmp_path):
  previews = [_preview(), _preview([[0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 0.0]], [2])]
  paths = sp.save_previews(previews, tmp_path / 'out')
  assert [p.rsplit('/', 1)[-1] for p in map(str, paths)] == ['scene_000.png', 'scene_001.png']
  for path, preview in zip(paths, previews):
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(preview))
