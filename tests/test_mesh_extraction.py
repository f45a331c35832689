"""Mesh extraction from occupancy logits: coarse-to-fine equals dense with far fewer queries,
sphere volume and orientation, small and thin parts survive, empty fields, fixed batches,
several objects in shared calls."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from scenediff_jax.inference.mesh import (dense_grid_points, extract_mesh, extract_mesh_dense,
                                          extract_meshes)

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
