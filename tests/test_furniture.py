"""Tests for the SynthRooms parametric furniture families."""
import itertools

import numpy as np
import pytest

from data_pipelines.synth_rooms import furniture
from data_pipelines.synth_rooms.parts import parts_bounds

SEEDS = (0, 1, 2, 7)
ALL_STYLES = [(c, s) for c in furniture.CLASSES for s in furniture.styles(c)]
# Loose realistic (min, max) metres of (width, height, depth) per class.
SIZE_BOUNDS = {
    'bed': ((0.8, 2.3), (0.4, 1.3), (1.8, 2.4)),
    'chair': ((0.35, 0.9), (0.7, 1.2), (0.4, 0.9)),
    'sofa': ((1.2, 2.8), (0.6, 1.1), (0.7, 1.1)),
    'table': ((0.6, 2.1), (0.35, 0.85), (0.45, 1.3)),
    'desk': ((0.9, 1.7), (0.68, 0.8), (0.45, 0.85)),
    'dresser': ((0.7, 1.8), (0.6, 1.3), (0.35, 0.7)),
    'nightstand': ((0.35, 0.7), (0.4, 0.7), (0.3, 0.6)),
    'sink': ((0.35, 0.75), (0.1, 0.4), (0.3, 0.65)),
    'cabinet': ((0.45, 1.3), (0.7, 2.1), (0.25, 0.7)),
    'lamp': ((0.1, 0.6), (0.25, 2.0), (0.1, 1.0)),
}
SUPPORTS = ('nightstand', 'desk', 'table', 'dresser', 'cabinet')


def _shape(class_name, style, seed):
  return furniture.make_shape(class_name, np.random.default_rng(seed), style=style)


def test_every_class_has_at_least_five_styles():
  assert set(furniture.CLASSES) == {'bed', 'chair', 'sofa', 'table', 'desk', 'dresser',
                                    'nightstand', 'sink', 'cabinet', 'lamp'}
  for c in furniture.CLASSES:
    names = furniture.styles(c)
    assert len(names) >= 5 and len(set(names)) == len(names)
    assert all(n.startswith(f'{c}/') for n in names)


@pytest.mark.parametrize('class_name,style', ALL_STYLES)
def test_parts_fill_the_unit_box(class_name, style):
  for seed in SEEDS:
    shape = _shape(class_name, style, seed)
    assert shape.class_name == class_name and shape.style == style
    assert shape.size.dtype == np.float64 and shape.size.shape == (3,)
    for p in shape.parts:
      lo, hi = p.bounds()
      assert np.all(lo >= -0.5 - 1e-9) and np.all(hi <= 0.5 + 1e-9), p
      # Every part is at least 1 cm thick in metres so that it shows up in renders.
      assert np.all(2 * np.asarray(p.half) * shape.size >= 0.01 - 1e-9), (p, shape.size)
    lo, hi = parts_bounds(shape.parts)
    np.testing.assert_allclose(lo, -0.5, atol=1e-9)
    np.testing.assert_allclose(hi, 0.5, atol=1e-9)


@pytest.mark.parametrize('class_name,style', ALL_STYLES)
def test_sizes_are_realistic(class_name, style):
  for seed in SEEDS:
    size = _shape(class_name, style, seed).size
    assert np.all(size > 0.05) and np.all(size < 3.0), size
    for dim, (lo, hi) in zip(size, SIZE_BOUNDS[class_name]):
      assert lo <= dim <= hi, (style, size)
    if class_name == 'lamp':
      assert size[1] > size[0] and size[1] > size[2], (style, size)


@pytest.mark.parametrize('class_name,style', ALL_STYLES)
def test_deterministic_given_the_seed(class_name, style):
  a, b = _shape(class_name, style, 3), _shape(class_name, style, 3)
  assert a.parts == b.parts and np.array_equal(a.size, b.size)
  assert a.round_footprint == b.round_footprint
  assert a.parts != _shape(class_name, style, 4).parts


def test_random_style_choice_is_deterministic_and_covers_all_styles():
  for c in furniture.CLASSES:
    shapes = [furniture.make_shape(c, np.random.default_rng(s)) for s in range(150)]
    assert {s.style for s in shapes} == set(furniture.styles(c))
    again = furniture.make_shape(c, np.random.default_rng(5))
    assert again.style == shapes[5].style and again.parts == shapes[5].parts


def test_short_style_names_and_unknown_styles():
  a = furniture.make_shape('chair', np.random.default_rng(0), style='slatted_back')
  assert a.style == 'chair/slatted_back'
  with pytest.raises(ValueError):
    furniture.make_shape('chair', np.random.default_rng(0), style='chair/throne')
  with pytest.raises(ValueError):
    furniture.make_shape('piano', np.random.default_rng(0))


@pytest.mark.parametrize('class_name', furniture.CLASSES)
def test_styles_have_different_layouts(class_name):
  names = furniture.styles(class_name)
  for seed in SEEDS:
    shapes = {n: _shape(class_name, n, seed) for n in names}
    for a, b in itertools.combinations(names, 2):
      assert shapes[a].parts != shapes[b].parts, (a, b)
  # Layouts differ in their make-up, not only in their dimensions.
  signatures = {(len(s.parts), tuple(sorted(p.kind for p in s.parts))) for s in shapes.values()}
  assert len(signatures) >= 3


def test_round_footprints_are_round():
  for class_name, style in ALL_STYLES:
    shape = _shape(class_name, style, 0)
    if shape.round_footprint:
      assert abs(shape.size[0] - shape.size[2]) < 1e-9, style
      assert any(p.kind != 'box' for p in shape.parts)


def _box_volume_centroid_z(parts, size, y_max):
  """Volume-weighted mean z of the parts' boxes clipped to y < y_max (canonical)."""
  total, moment = 0.0, 0.0
  for p in parts:
    lo, hi = p.bounds()
    hi_y = min(hi[1], y_max)
    if hi_y <= lo[1]:
      continue
    vol = np.prod((hi - lo)[[0, 2]] * size[[0, 2]]) * (hi_y - lo[1]) * size[1]
    total, moment = total + vol, moment + vol * (lo[2] + hi[2]) / 2
  return moment / total


@pytest.mark.parametrize('style', furniture.styles('chair'))
def test_chair_backrest_is_at_positive_z(style):
  for seed in SEEDS:
    shape = _shape('chair', style, seed)
    # Every chair's seat is below 0.55 m; what rises above that is the back (and arms).
    y_seat = 0.5 - 0.55 / shape.size[1]
    assert _box_volume_centroid_z(shape.parts, shape.size, y_seat) > 0.1, (style, seed)


@pytest.mark.parametrize('style', furniture.styles('dresser'))
def test_dresser_handles_are_on_the_front(style):
  for seed in SEEDS:
    shape = _shape('dresser', style, seed)
    extents = [2 * np.asarray(p.half) * shape.size for p in shape.parts]
    handles = [p for p, e in zip(shape.parts, extents)
               if p.kind == 'box' and e[2] < 0.025 and e[0] < 0.2 and e[1] < 0.2]
    assert len(handles) >= 2, style
    assert all(p.center[2] < -0.4 for p in handles), style
    # Handles stick out of the front: nothing else reaches further towards -z except the top.
    front = min(p.center[2] - p.half[2] for p in handles)
    assert front <= min(p.center[2] - p.half[2] for p in shape.parts) + 0.06


@pytest.mark.parametrize('class_name', SUPPORTS)
def test_support_surface_is_the_box_top(class_name):
  for style in furniture.styles(class_name):
    for seed in SEEDS:
      shape = _shape(class_name, style, seed)
      tops = [p for p in shape.parts if abs(p.center[1] - p.half[1] + 0.5) < 1e-9]
      # A wide part spans the top of the box (y = -0.5 is up); it is what objects stand on.
      assert max(4 * p.half[0] * p.half[2] for p in tops) > 0.8, (style, seed)


@pytest.mark.parametrize('class_name', ['chair', 'sofa', 'table'])
def test_the_ground_truth_mesh_is_the_outer_surface_of_the_union(class_name):
  """The mesh shapes are scored against: watertight, the union's volume (Monte Carlo with
  the renderer's inside test), and no face buried inside a part, unlike the parts' meshes
  together, whose buried faces a reconstruction could never match."""
  import trimesh

  from data_pipelines.synth_rooms import raytrace, shape_bank
  shape = furniture.make_shape(class_name, np.random.default_rng(3))
  mesh = shape_bank.outer_mesh(shape)
  assert mesh.is_watertight
  points = np.random.default_rng(0).uniform(-0.5, 0.5, (200_000, 3))
  assert mesh.volume == pytest.approx(np.mean(raytrace.inside(shape.parts, points)), abs=4e-3)
  rng = np.random.default_rng(1)
  on_outer, face = trimesh.sample.sample_surface(mesh, 5000, seed=rng)
  step = 2e-3 * mesh.face_normals[face]  # a step outwards leaves every part
  assert np.mean(raytrace.inside(shape.parts, on_outer + step)) < 0.01
  parts = trimesh.util.concatenate([shape_bank.part_mesh(p) for p in shape.parts])
  on_parts, face = trimesh.sample.sample_surface(parts, 5000, seed=rng)
  buried = np.mean(raytrace.inside(shape.parts, on_parts + 2e-3 * parts.face_normals[face]))
  assert buried > 0.05  # the parts' meshes together: this share of their area is buried
