"""Meshes from an occupancy decoder: dense or coarse-to-fine (MISE-style) grid + marching cubes.

The surface is the 0-level set of the decoder's logit (logit > 0 inside), in the object's
canonical frame. Grid convention shared by every function here: `resolution` is the number of
cells per axis, so a grid has resolution + 1 points per axis, spaced evenly from bounds[0] to
bounds[1] inclusive. With this convention a grid of n cells is exactly every other point of the
grid of 2n cells, which lets the coarse-to-fine levels reuse earlier queries, and lets the
coarse-to-fine and dense extractions query bit-identical points.

Coarse-to-fine: evaluate the coarse grid, then repeatedly double the resolution. Cells that may
hold surface (a sign change among the corners, or a corner with |logit| <= margin) get their new
fine points queried; every other fine value is trilinearly interpolated from the coarser level,
which keeps its sign away from the surface. On the coarse grid the marked cells are dilated by one
cell, for surface thinner than a coarse cell next to a marked one; finer levels skip the dilation
(it cost a 128^3 sphere 1.7x the queries) and rely on a closure pass: unknown corners of any fine
cell whose values still cross 0 are queried until none is left. So every cell marching cubes
triangulates has exact corners, and the mesh equals the dense one wherever the surface was found.
"""
import functools
import itertools
import time

import numpy as np
import trimesh
from skimage import measure

DEFAULT_BOUNDS = (-0.55, 0.55)


def dense_grid_points(resolution, bounds=DEFAULT_BOUNDS):
  """Grid points [(resolution + 1)^3, 3] float32, x slowest (C order of the (i, j, k) grid).

  `resolution` counts cells per axis; both bounds are grid points.
  """
  index = np.stack(np.meshgrid(*[np.arange(resolution + 1)] * 3, indexing='ij'), -1)
  return _index_to_points(index.reshape(-1, 3), resolution, bounds)


def extract_mesh_dense(occupancy_fn, resolution=128, bounds=DEFAULT_BOUNDS, batch_size=65536):
  """Mesh from the decoder evaluated at every point of the grid (the reference extraction).

  Args:
    occupancy_fn: maps points [N, 3] float32 to logits [N] (any array-like). It is always
      called with exactly `batch_size` points: the last batch is padded with copies of its
      first point, so a jitted decoder compiles once.
    resolution: cells per axis of the grid.
    bounds: (low, high) of the cubic grid, in canonical coordinates.
    batch_size: points per call of `occupancy_fn`.

  Returns:
    (mesh, stats): a trimesh.Trimesh (empty if the field never crosses 0) and a dict with
    `queries` (real points sent to occupancy_fn, padding excluded), `padded_queries` (padding
    included), `calls`, `grid_points` and `seconds` (wall time, including marching cubes).
  """
  start, stats = time.perf_counter(), _new_stats(resolution)
  points = dense_grid_points(resolution, bounds)
  values = _evaluate(occupancy_fn, points, batch_size, stats).reshape((resolution + 1,) * 3)
  mesh = _marching_cubes(values, resolution, bounds)
  stats['seconds'] = time.perf_counter() - start
  return mesh, stats


def extract_mesh(occupancy_fn, resolution=128, coarse_resolution=32, bounds=DEFAULT_BOUNDS,
                 batch_size=65536, margin=1e-3):
  """Mesh from coarse-to-fine evaluation of the decoder (same grid as `extract_mesh_dense`).

  Args:
    occupancy_fn: as in `extract_mesh_dense` (fixed-size, padded batches).
    resolution: cells per axis of the final grid; must be coarse_resolution * 2^k, k >= 0.
    coarse_resolution: cells per axis of the first, fully evaluated grid. Surface features
      that fit between its points far from any other surface can be missed.
    bounds: (low, high) of the cubic grid, in canonical coordinates.
    batch_size: points per call of `occupancy_fn`.
    margin: a cell with a corner whose |logit| <= margin is refined even without a sign
      change (catches surfaces grazing the cell), in logit units.

  Returns:
    (mesh, stats) as in `extract_mesh_dense`; stats also has `rounds` (batched query rounds).
  """
  ratio = resolution // coarse_resolution
  if resolution % coarse_resolution or ratio & (ratio - 1):
    raise ValueError(f'resolution {resolution} is not coarse_resolution {coarse_resolution} '
                     'times a power of two')
  start, stats = time.perf_counter(), _new_stats(resolution)
  n, stride = coarse_resolution, resolution // coarse_resolution
  values = np.zeros((n + 1,) * 3, np.float32)
  known = np.zeros(values.shape, bool)
  query = functools.partial(_query, occupancy_fn, resolution=resolution, bounds=bounds,
                            batch_size=batch_size, stats=stats)
  query(values, known, np.ones(values.shape, bool), stride)
  while n < resolution:
    active = _surface_cells(values, margin)
    if n == coarse_resolution:
      active = _dilate(active)
    values, known = _upsample(values), _upsample_known(known)
    n, stride = 2 * n, stride // 2
    query(values, known, _cells_to_points(_repeat_cells(active)), stride)
    # Usually a no-op; it follows surface that leaves the refined cells (e.g. a thin fin), so
    # no cell crossing 0 is triangulated from interpolated corners.
    while True:
      pending = _surface_cells(values, margin) & ~_all_corners(known)
      if not pending.any():
        break
      query(values, known, _cells_to_points(pending), stride)
  mesh = _marching_cubes(values, resolution, bounds)
  stats['seconds'] = time.perf_counter() - start
  return mesh, stats


def _new_stats(resolution):
  return {'queries': 0, 'padded_queries': 0, 'calls': 0, 'rounds': 0,
          'grid_points': (resolution + 1) ** 3, 'seconds': 0.0}


def _index_to_points(index, resolution, bounds):
  """Canonical float32 points of integer grid indices; the one formula every path uses."""
  low, high = bounds
  return (low + index * ((high - low) / resolution)).astype(np.float32)


def _evaluate(occupancy_fn, points, batch_size, stats):
  """Logits [N] float32 of points [N, 3], in calls of exactly `batch_size` points."""
  out = np.empty(len(points), np.float32)
  for begin in range(0, len(points), batch_size):
    batch = points[begin:begin + batch_size]
    real = len(batch)
    if real < batch_size:
      batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - real, 0)])
    out[begin:begin + real] = np.asarray(occupancy_fn(batch), np.float32).reshape(-1)[:real]
    stats['queries'] += real
    stats['padded_queries'] += batch_size
    stats['calls'] += 1
  stats['rounds'] += 1
  return out


def _query(occupancy_fn, values, known, wanted, stride, *, resolution, bounds, batch_size,
           stats):
  """Evaluates the wanted, not yet known grid points in place (grid index * stride = final)."""
  todo = wanted & ~known
  if todo.any():
    points = _index_to_points(np.argwhere(todo) * stride, resolution, bounds)
    values[todo] = _evaluate(occupancy_fn, points, batch_size, stats)
    known |= todo


def _corners(grid):
  """The 8 corner views [n, n, n] of the cells of a point grid [n + 1]^3."""
  n = grid.shape[0] - 1
  return [grid[a:a + n, b:b + n, c:c + n] for a, b, c in itertools.product((0, 1), repeat=3)]


def _surface_cells(values, margin):
  corners = _corners(values)
  high, low = functools.reduce(np.maximum, corners), functools.reduce(np.minimum, corners)
  near = functools.reduce(np.minimum, [np.abs(c) for c in corners]) <= margin
  return ((high > 0) & (low <= 0)) | near


def _all_corners(known):
  return functools.reduce(np.logical_and, _corners(known))


def _cells_to_points(cells):
  """Points [n + 1]^3 that are a corner of at least one marked cell [n]^3."""
  n = cells.shape[0]
  points = np.zeros((n + 1,) * 3, bool)
  for a, b, c in itertools.product((0, 1), repeat=3):
    points[a:a + n, b:b + n, c:c + n] |= cells
  return points


def _dilate(cells):
  """Marks every cell within one cell (26-neighbourhood) of a marked cell; separable."""
  for axis in range(3):
    cells = np.moveaxis(cells, axis, 0).copy()
    grown = cells.copy()
    grown[1:] |= cells[:-1]
    grown[:-1] |= cells[1:]
    cells = np.moveaxis(grown, 0, axis)
  return np.ascontiguousarray(cells)


def _repeat_cells(cells):
  """Each cell of a level becomes its 2x2x2 child cells at the next level."""
  return cells.repeat(2, 0).repeat(2, 1).repeat(2, 2)


def _upsample(values):
  """Trilinear interpolation of a point grid [n + 1]^3 onto [2n + 1]^3 (separable)."""
  for axis in range(3):
    values = np.moveaxis(values, axis, 0)
    fine = np.empty((2 * values.shape[0] - 1,) + values.shape[1:], values.dtype)
    fine[0::2] = values
    fine[1::2] = 0.5 * (values[:-1] + values[1:])
    values = np.moveaxis(fine, 0, axis)
  return np.ascontiguousarray(values)


def _upsample_known(known):
  fine = np.zeros((2 * known.shape[0] - 1,) * 3, bool)
  fine[::2, ::2, ::2] = known
  return fine


def _marching_cubes(values, resolution, bounds):
  """Mesh of the 0-level set in canonical coordinates, outward faces; empty if none."""
  if not (values.max() > 0 and values.min() < 0):
    return trimesh.Trimesh()
  # 'descent': the inside has values above the level, which orients faces outward.
  verts, faces, _, _ = measure.marching_cubes(values, level=0.0, gradient_direction='descent')
  low, high = bounds
  verts = low + verts.astype(np.float64) * ((high - low) / resolution)
  mesh = trimesh.Trimesh(verts, faces, process=False)
  if mesh.is_watertight and mesh.volume < 0:
    mesh.invert()
  return mesh
