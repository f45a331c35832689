"""Mesh extraction from occupancy logits: coarse-to-fine equals dense with far fewer queries,
sphere volume and orientation, small and thin parts survive, detached thin parts need seeds,
empty fields, fixed batches, several objects in shared calls."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from scenediff_jax.inference.mesh import (
  dense_grid_points,
  extract_mesh,
  extract_mesh_dense,
  extract_meshes,
)

R0 = 0.35


def sphere(points, center=(0.0, 0.0, 0.0), radius=R0):
  return radius - np.linalg.norm(points - np.asarray(center), axis=-1)


def box(points, half=(0.3, 0.2, 0.25), center=(0.0, 0.0, 0.0), rounding=0.0):
  q = np.abs(points - np.asarray(center)) - (np.asarray(half) - rounding)
  sdf = np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0) - rounding
  return -sdf


def two_spheres(points):
  # Radius 0.07 is about two cells of the 32-cell coarse grid over [-0.55, 0.55].
  return np.maximum(sphere(points, (-0.25, 0.1, 0.0), 0.07),
                    sphere(points, (0.25, -0.1, 0.05), 0.07))


def sphere_with_fin(points):
  # A 0.012-thick plate between two coarse grid planes: no coarse point lies inside it, so
  # only the dilation next to the sphere and the closure pass along the plate can find it.
  y0 = -0.55 + 1.1 / 32 * 16.5
  plate = box(points, half=(0.225, 0.006, 0.1), center=(0.225, y0, 0.0))
  return np.maximum(sphere(points, radius=0.2), plate)


def sphere_with_wide_plate(points):
  # The fin's thin plate, but reaching out on every side: the closure must follow it along
  # -x, +x, -z and +z.
  y0 = -0.55 + 1.1 / 32 * 16.5
  return np.maximum(sphere(points, radius=0.2), box(points, half=(0.45, 0.006, 0.35),
                                                     center=(0.0, y0, 0.0)))


def plate_past_the_grid(points):
  # The thin plate again, running out of the grid on both sides of x: the closure meets
  # the grid's boundary.
  y0 = -0.55 + 1.1 / 32 * 16.5
  return np.maximum(sphere(points, radius=0.2), box(points, half=(0.7, 0.006, 0.2),
                                                     center=(0.0, y0, 0.0)))


# A rod along x, 0.012 thick in y and z, between coarse grid planes in both (no coarse point
# lies inside it) and 4-5 coarse cells above the sphere: nothing leads coarse-to-fine to it.
ROD_Y = -0.55 + 1.1 / 32 * 26.5
ROD_Z = -0.55 + 1.1 / 32 * 16.5
ROD_SEEDS = np.stack([np.linspace(-0.28, 0.28, 15), np.full(15, ROD_Y), np.full(15, ROD_Z)], -1)


def sphere_and_detached_rod(points):
  rod = box(points, half=(0.3, 0.006, 0.006), center=(0.0, ROD_Y, ROD_Z))
  return np.maximum(sphere(points, radius=0.2), rod)


def assert_same_mesh(dense, fine):
  assert len(fine.vertices) == len(dense.vertices) > 0
  d_fine, _ = cKDTree(dense.vertices).query(fine.vertices)
  d_dense, _ = cKDTree(fine.vertices).query(dense.vertices)
  extent = np.ptp(dense.vertices, axis=0).max()
  assert np.mean(d_fine ** 2) + np.mean(d_dense ** 2) < 1e-6 * extent ** 2
  # Same points, same grid: the meshes are in fact identical.
  np.testing.assert_array_equal(fine.vertices, dense.vertices)
  np.testing.assert_array_equal(fine.faces, dense.faces)


def test_grid_points_include_both_bounds():
  points = dense_grid_points(4, bounds=(-1.0, 1.0))
  assert points.shape == (125, 3) and points.dtype == np.float32
  np.testing.assert_allclose(np.unique(points[:, 0]), [-1.0, -0.5, 0.0, 0.5, 1.0])
  np.testing.assert_allclose(points[1], [-1.0, -1.0, -0.5])  # z fastest


def test_sphere_at_128_matches_dense_with_10x_fewer_queries():
  dense, dense_stats = extract_mesh_dense(sphere, resolution=128)
  fine, stats = extract_mesh(sphere, resolution=128, coarse_resolution=32)
  assert dense_stats['queries'] == 129 ** 3
  assert stats['queries'] * 10 <= dense_stats['queries']
  assert_same_mesh(dense, fine)


@pytest.mark.parametrize('field', [box, lambda p: box(p, half=(0.32, 0.18, 0.27), rounding=0.06)],
                         ids=['box', 'rounded_box'])
def test_box_matches_dense(field):
  dense, dense_stats = extract_mesh_dense(field, resolution=64)
  fine, stats = extract_mesh(field, resolution=64, coarse_resolution=16)
  assert stats['queries'] * 2 < dense_stats['queries']
  assert_same_mesh(dense, fine)


def test_sphere_mesh_is_closed_outward_and_has_the_right_volume():
  mesh, _ = extract_mesh(sphere, resolution=64, coarse_resolution=16)
  assert mesh.is_watertight
  assert mesh.volume > 0
  np.testing.assert_allclose(mesh.volume, 4 / 3 * np.pi * R0 ** 3, rtol=0.01)
  # Outward: each face normal points away from the centre.
  assert np.all(np.sum(mesh.face_normals * mesh.triangles_center, -1) > 0)
  np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=-1), R0, atol=2e-3)


def test_two_small_spheres_are_both_found():
  mesh, _ = extract_mesh(two_spheres, resolution=128, coarse_resolution=32)
  assert len(mesh.split()) == 2
  dense, _ = extract_mesh_dense(two_spheres, resolution=128)
  assert_same_mesh(dense, mesh)


def test_thin_fin_next_to_a_sphere_is_followed():
  dense, _ = extract_mesh_dense(sphere_with_fin, resolution=64)
  fine, _ = extract_mesh(sphere_with_fin, resolution=64, coarse_resolution=32)
  assert dense.vertices[:, 0].max() > 0.44  # the fin reaches x = 0.45
  assert_same_mesh(dense, fine)


def test_a_detached_thin_rod_is_missed_without_seeds_and_found_with_them():
  dense, _ = extract_mesh_dense(sphere_and_detached_rod, resolution=64)
  unseeded, unseeded_stats = extract_mesh(sphere_and_detached_rod, resolution=64,
                                          coarse_resolution=32)
  seeded, seeded_stats = extract_mesh(sphere_and_detached_rod, resolution=64,
                                      coarse_resolution=32, seed_points=ROD_SEEDS)
  # The limitation, measured: the dense grid sees the rod, coarse-to-fine alone only the sphere.
  assert len(dense.split(only_watertight=False)) == 2
  assert len(unseeded.split(only_watertight=False)) == 1
  assert_same_mesh(extract_mesh_dense(lambda p: sphere(p, radius=0.2), resolution=64)[0],
                   unseeded)
  # Seeds along the rod (as a thin Gaussian's samples would be) recover it exactly.
  assert len(seeded.split(only_watertight=False)) == 2
  assert_same_mesh(dense, seeded)
  assert seeded_stats['queries'] > unseeded_stats['queries']


def test_seeds_outside_the_bounds_are_ignored():
  plain, plain_stats = extract_mesh(sphere, resolution=32, coarse_resolution=8)
  outside = np.array([[0.56, 0.0, 0.0], [0.0, -0.6, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, np.nan]])
  for seeds in (outside, np.zeros((0, 3))):
    mesh, stats = extract_mesh(sphere, resolution=32, coarse_resolution=8, seed_points=seeds)
    assert_same_mesh(plain, mesh)
    assert stats['queries'] == plain_stats['queries']
  # A point on the high bound is inside: its (last) cell and neighbours get refined.
  _, corner_stats = extract_mesh(sphere, resolution=32, coarse_resolution=8,
                                 seed_points=[[0.55, 0.55, 0.55]])
  assert corner_stats['queries'] > plain_stats['queries']


def test_all_outside_field_gives_an_empty_mesh():
  outside = lambda p: -1.0 - np.linalg.norm(p, axis=-1)
  for mesh, stats in (extract_mesh(outside, resolution=32, coarse_resolution=8),
                      extract_mesh_dense(outside, resolution=32)):
    assert len(mesh.vertices) == 0 and len(mesh.faces) == 0
    assert stats['queries'] > 0


def test_batches_have_one_fixed_size_and_no_point_is_queried_twice():
  calls = []

  def recording(points):
    calls.append(np.array(points))
    return sphere(points)

  batch_size = 1000
  mesh, stats = extract_mesh(recording, resolution=32, coarse_resolution=8, batch_size=batch_size)
  assert len(mesh.faces) > 0 and len(calls) == stats['calls'] > 1
  assert all(c.shape == (batch_size, 3) and c.dtype == np.float32 for c in calls)
  assert stats['padded_queries'] == batch_size * len(calls) >= stats['queries']
  # Padding repeats a point of its own batch, so distinct points = real queries.
  assert len(np.unique(np.concatenate(calls), axis=0)) == stats['queries']


def test_resolution_must_be_a_power_of_two_multiple():
  with pytest.raises(ValueError):
    extract_mesh(sphere, resolution=48, coarse_resolution=16)


FIELDS = {'sphere': sphere, 'box': box, 'two_spheres': two_spheres, 'fin': sphere_with_fin,
          'plate': sphere_with_wide_plate, 'plate_past_the_grid': plate_past_the_grid,
          'outside': lambda p: -1.0 - np.linalg.norm(p, axis=-1)}


def test_several_objects_in_lock_step_equal_each_alone_in_shared_calls():
  fields = list(FIELDS.values())
  calls = []

  def rows_fn(objects, points):
    calls.append((np.array(objects), np.array(points)))
    return np.stack([fields[o](p) for o, p in zip(objects, points)])

  meshes, stats = extract_meshes(rows_fn, len(fields), resolution=64, coarse_resolution=16,
                                 rows=4, row_size=300)
  alone = [extract_mesh(f, resolution=64, coarse_resolution=16, batch_size=300) for f in fields]
  for (single, _), mesh in zip(alone, meshes):
    if len(single.faces):
      assert_same_mesh(single, mesh)
    else:
      assert len(mesh.faces) == 0
  # Lock step: the rounds are the longest object's, not their sum; calls are shared.
  assert stats['rounds'] == max(s['rounds'] for _, s in alone)
  assert stats['queries'] == sum(s['queries'] for _, s in alone)
  assert len(calls) == stats['calls'] < sum(s['calls'] for _, s in alone)
  assert all(o.shape == (4,) and o.dtype == np.int32 and p.shape == (4, 300, 3)
             and p.dtype == np.float32 for o, p in calls)
  # Each row holds one object's points; padding repeats a point of the same row, so the
  # distinct (object, point) pairs are exactly the real queries.
  pairs = np.concatenate([np.concatenate([np.broadcast_to(o[:, None, None], (4, 300, 1)), p], -1)
                          .reshape(-1, 4) for o, p in calls])
  assert len(np.unique(pairs, axis=0)) == stats['queries']


def test_seeds_of_one_object_in_lock_step_equal_each_alone_with_its_own_seeds():
  fields = [sphere_and_detached_rod, sphere_and_detached_rod, two_spheres]
  seeds = [ROD_SEEDS, None, ROD_SEEDS[:1] - 0.9]  # the last one's seed is outside the bounds

  def rows_fn(objects, points):
    return np.stack([fields[o](p) for o, p in zip(objects, points)])

  meshes, stats = extract_meshes(rows_fn, len(fields), resolution=64, coarse_resolution=32,
                                 rows=4, row_size=300, seed_points=seeds)
  alone = [extract_mesh(f, resolution=64, coarse_resolution=32, batch_size=300, seed_points=s)
           for f, s in zip(fields, seeds)]
  for (single, _), mesh in zip(alone, meshes):
    assert_same_mesh(single, mesh)
  # Each object's seeds went to it alone: only the seeded rod is found.
  assert [len(m.split(only_watertight=False)) for m in meshes] == [2, 1, 2]
  assert stats['queries'] == sum(s['queries'] for _, s in alone)
  with pytest.raises(ValueError):
    extract_meshes(rows_fn, len(fields), resolution=64, coarse_resolution=32, seed_points=seeds[:2])


@pytest.mark.parametrize('name', ['two_spheres', 'plate', 'plate_past_the_grid', 'box'])
def test_local_closure_check_finds_what_a_full_pass_finds(monkeypatch, name):
  from scenediff_jax.inference import mesh as mesh_lib
  results, queried = [], []
  for share in (0.0, np.inf):  # always scan the whole grid; always look around fresh points
    monkeypatch.setattr(mesh_lib, 'FULL_CHECK_SHARE', share)
    calls = []
    recording = lambda p: (calls.append(np.array(p)), FIELDS[name](p))[1]
    results.append(extract_mesh(recording, resolution=64, coarse_resolution=32, batch_size=999))
    queried.append(np.concatenate(calls))
  (full, full_stats), (local, local_stats) = results
  np.testing.assert_array_equal(queried[0], queried[1])  # the same points in the same calls
  assert_same_mesh(full, local)
  assert_same_mesh(extract_mesh_dense(FIELDS[name], resolution=64)[0], local)
  assert full_stats['queries'] == local_stats['queries']
  assert full_stats['rounds'] == local_stats['rounds']


def test_no_objects_make_no_calls():
  never = lambda objects, points: pytest.fail('the decoder was called')
  meshes, stats = extract_meshes(never, 0, resolution=32, coarse_resolution=8)
  assert meshes == [] and stats['calls'] == 0


def test_an_open_surface_keeps_its_outward_faces():
  # Inside below z = -0.3: the surface is cut by the grid's sides, so it encloses nothing and
  # its signed volume says nothing; its faces must still point up, out of the solid.
  mesh, _ = extract_mesh(lambda p: -0.3 - p[:, 2], resolution=32, coarse_resolution=8)
  assert not mesh.is_watertight
  assert np.all(mesh.face_normals[:, 2] > 0.99)


def test_mesh_agreement_tells_same_from_missing_and_moved():
  from scenediff_jax.jobs.shape_eval import mesh_agreement
  both, _ = extract_mesh_dense(two_spheres, resolution=64)
  one, _ = extract_mesh_dense(lambda p: sphere(p, (-0.25, 0.1, 0.0), 0.07), resolution=64)
  assert mesh_agreement(both, both.copy())['same_as_dense']
  missing = mesh_agreement(one, both)
  assert not missing['same_as_dense']
  assert (missing['components'], missing['dense_components']) == (1, 2)
  moved = both.copy()
  moved.apply_translation([0.01, 0, 0])  # vertex Chamfer 2 · 0.01² = 2e-4 > 1e-5
  assert not mesh_agreement(moved, both)['same_as_dense']
