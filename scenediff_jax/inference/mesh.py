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
What it can miss is a surface feature detached from all other surface and thinner than a coarse
cell, lying between coarse grid points (a free-floating thin rod or plate): no coarse cell near it
crosses 0. Seed points fix that: at every level the cells holding one are refined as if they held
surface (dilated too on the coarse grid), so a part that the caller knows is there (e.g. from its
part Gaussians) is found.

Several objects (a scene's) are refined in lock step by `extract_meshes`: each round, the points
all of them need share fixed-shape decoder calls, one object per row.
"""
import functools
import itertools
import time

import numpy as np
from skimage import measure
import trimesh

DEFAULT_BOUNDS = (-0.55, 0.55)
_OFFSETS = np.array(list(itertools.product((0, 1), repeat=3)))  # a cell's corners
# Above this share of fresh points per grid point, the closure check scans the whole grid
# (one pass of array operations) instead of looking around each fresh point.
FULL_CHECK_SHARE = 1 / 64


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
  points = {0: dense_grid_points(resolution, bounds)}
  values = _evaluate_rows(_one_object(occupancy_fn), points, 1, batch_size, stats)[0]
  values = values.reshape((resolution + 1,) * 3)
  mesh = _marching_cubes(values, resolution, bounds)
  stats['seconds'] = time.perf_counter() - start
  return mesh, stats


def extract_mesh(occupancy_fn, resolution=128, coarse_resolution=32, bounds=DEFAULT_BOUNDS,
                 batch_size=65536, margin=1e-3, seed_points=None):
  """Mesh from coarse-to-fine evaluation of the decoder (same grid as `extract_mesh_dense`).

  Args:
    occupancy_fn: as in `extract_mesh_dense` (fixed-size, padded batches).
    resolution: cells per axis of the final grid; must be coarse_resolution * 2^k, k >= 0.
    coarse_resolution: cells per axis of the first, fully evaluated grid. Surface features
      that fit between its points far from any other surface can be missed, unless seeded.
    bounds: (low, high) of the cubic grid, in canonical coordinates.
    batch_size: points per call of `occupancy_fn`.
    margin: a cell with a corner whose |logit| <= margin is refined even without a sign
      change (catches surfaces grazing the cell), in logit units.
    seed_points: None or points [M, 3] (canonical frame) where surface may be, e.g. samples
      of the shape's part Gaussians: the cells holding one are refined at every level as if
      they held surface, so a thin part detached from the rest is found if a seed lies in or
      near it.
      Points outside the bounds are ignored. Seeds only add queries: where the surface is
      found, the mesh still equals the dense one.

  Returns:
    (mesh, stats) as in `extract_mesh_dense`; stats also has `rounds` (batched query rounds).
  """
  meshes, stats = extract_meshes(_one_object(occupancy_fn), 1, resolution, coarse_resolution,
                                 bounds, rows=1, row_size=batch_size, margin=margin,
                                 seed_points=None if seed_points is None else [seed_points])
  return meshes[0], stats


def extract_meshes(occupancy_fn, count, resolution=128, coarse_resolution=32,
                   bounds=DEFAULT_BOUNDS, rows=16, row_size=512, margin=1e-3, seed_points=None):
  """Meshes of `count` objects, each refined as `extract_mesh` does, in lock step: every
  round's queries of all objects share the decoder calls (few, full calls matter on a GPU).

  Args:
    occupancy_fn: maps (objects int32 [rows], points float32 [rows, row_size, 3]) to logits
      [rows, row_size]; row r holds points of object objects[r]. It is always called with
      these shapes: a short row is padded with copies of its first point and unused rows
      repeat row 0, so a jitted decoder compiles once.
    count: number of objects (their indices 0..count-1 are what `objects` holds).
    resolution, coarse_resolution, bounds, margin: as in `extract_mesh`.
    rows, row_size: a call's shape; the last row of each object in a round is padded.
    seed_points: None, or a list of `count` entries, each None or object k's seed points
      [M, 3] as in `extract_mesh`.

  Returns:
    (meshes, stats): `count` trimesh.Trimesh (empty where the field never crosses 0), and
    stats as in `extract_mesh`, summed over the objects (`rounds` counts shared rounds).
  """
  ratio = resolution // coarse_resolution
  if resolution % coarse_resolution or ratio & (ratio - 1):
    raise ValueError(f'resolution {resolution} is not coarse_resolution {coarse_resolution} '
                     'times a power of two')
  if seed_points is None:
    seed_points = [None] * count
  if len(seed_points) != count:
    raise ValueError(f'{len(seed_points)} seed point sets for {count} objects')
  start, stats = time.perf_counter(), _new_stats(resolution)
  seed_cells = [None if seeds is None else functools.partial(_seed_cells, seeds, bounds=bounds)
                for seeds in seed_points]
  refiners = [_refine(resolution, coarse_resolution, margin, cells) for cells in seed_cells]
  grids = [None] * count
  wanted = {k: next(refiner) for k, refiner in enumerate(refiners)}
  while wanted:
    points = {k: _index_to_points(index, resolution, bounds) for k, index in wanted.items()}
    logits = _evaluate_rows(occupancy_fn, points, rows, row_size, stats)
    wanted = {}
    for k, values in logits.items():
      try:
        wanted[k] = refiners[k].send(values)
      except StopIteration as done:
        grids[k] = done.value
  meshes = [_marching_cubes(grid, resolution, bounds) for grid in grids]
  stats['grid_points'] *= count
  stats['seconds'] = time.perf_counter() - start
  return meshes, stats


def _refine(resolution, coarse_resolution, margin, seeds=None):
  """One object's coarse-to-fine refinement as a generator: it yields the final-grid indices
  [m, 3] whose logits it needs next, is sent their logits [m], and returns the final grid of
  logits [resolution + 1]^3 (exact near the surface, interpolated elsewhere). `seeds`: None,
  or a function of a level's cells per axis n giving the cells [n]^3 bool that are refined
  at that level as if they held surface (at every level: a seeded part thinner than the next
  level's spacing shows no sign change there, yet may hold points of the final grid)."""
  n, stride = coarse_resolution, resolution // coarse_resolution
  coarse = np.indices((n + 1,) * 3).reshape(3, -1).T  # every point of the coarse grid, C order
  values = (yield coarse * stride).reshape((n + 1,) * 3)
  known = np.ones(values.shape, bool)
  while n < resolution:
    active = _surface_cells(values, margin)
    if seeds is not None:
      active |= seeds(n)
    if n == coarse_resolution:
      # Seeded cells are dilated too: a thin part near a seed may cross a neighbouring cell.
      active = _dilate(active)
    values, known = _upsample(values), _upsample_known(known)
    n, stride = 2 * n, stride // 2
    fresh = np.argwhere(_cells_to_points(_repeat_cells(active)) & ~known)
    # The closure: usually short, it follows surface that leaves the refined cells (e.g. a
    # thin fin), so no cell crossing 0 is triangulated from interpolated corners. With
    # nothing fresh there is nothing to follow: a cell inside an unrefined coarse cell has
    # only values interpolated from corners that neither cross 0 nor come within `margin`.
    while len(fresh):
      index = tuple(fresh.T)
      values[index] = yield fresh * stride
      known[index] = True
      fresh = _pending_points(values, known, fresh, margin)
  return values


def _seed_cells(points, n, bounds=DEFAULT_BOUNDS):
  """Cells [n]^3 bool of an n-cell grid holding one of the points [M, 3]; points outside the
  bounds (or not finite) are dropped."""
  low, high = bounds
  points = np.asarray(points, np.float64).reshape(-1, 3)
  points = points[np.all((points >= low) & (points <= high), axis=1)]
  # A point on the high bound belongs to the last cell.
  index = np.clip(np.floor((points - low) * (n / (high - low))).astype(int), 0, n - 1)
  cells = np.zeros((n,) * 3, bool)
  cells[tuple(index.T)] = True
  return cells


def _pending_points(values, known, fresh, margin):
  """Unknown corners [m, 3] of the cells that may hold surface but have an unknown corner.

  Only cells with a corner among the points just queried (`fresh`) can have changed since
  the last check, so a few fresh points are checked locally; many, in one pass over the grid.
  """
  n = values.shape[0] - 1
  if len(fresh) > FULL_CHECK_SHARE * values.size:
    cells = np.argwhere(_surface_cells(values, margin) & ~_all_corners(known))
  else:
    cells = _cells_touching(fresh, n)
    corner_values = [values[tuple((cells + offset).T)] for offset in _OFFSETS]
    corner_known = [known[tuple((cells + offset).T)] for offset in _OFFSETS]
    cells = cells[_crosses(corner_values, margin) & ~np.logical_and.reduce(corner_known)]
  points = _unique_rows(np.concatenate([cells + offset for offset in _OFFSETS]), n + 1)
  return points[~known[tuple(points.T)]]


def _cells_touching(points, n):
  """The cells [m, 3] of an n-cell grid that have one of the grid points [p, 3] as a corner."""
  cells = np.concatenate([points - offset for offset in _OFFSETS])
  return _unique_rows(cells[np.all((cells >= 0) & (cells < n), axis=1)], n)


def _unique_rows(index, size):
  """Distinct rows of grid indices [m, 3] in [0, size)^3, in C order."""
  flat = np.unique(np.ravel_multi_index(tuple(index.T), (size,) * 3))
  return np.stack(np.unravel_index(flat, (size,) * 3), -1)


def _new_stats(resolution):
  return {'queries': 0, 'padded_queries': 0, 'calls': 0, 'rounds': 0,
          'grid_points': (resolution + 1) ** 3, 'seconds': 0.0}


def _index_to_points(index, resolution, bounds):
  """Canonical float32 points of integer grid indices; the one formula every path uses."""
  low, high = bounds
  return (low + index * ((high - low) / resolution)).astype(np.float32)


def _one_object(occupancy_fn):
  """occupancy_fn of points [N, 3] as the rows form `_evaluate_rows` calls (one row)."""
  return lambda objects, points: np.asarray(occupancy_fn(points[0])).reshape(1, -1)


def _evaluate_rows(occupancy_fn, points, rows, row_size, stats):
  """Logits {k: [m_k]} of each object's points {k: [m_k, 3]}, in calls of `rows` rows of
  `row_size` points; a row holds one object's points."""
  pieces = [(k, begin) for k, p in points.items() for begin in range(0, len(p), row_size)]
  logits = {k: np.empty(len(p), np.float32) for k, p in points.items()}
  for first in range(0, len(pieces), rows):
    call = pieces[first:first + rows]
    objects = np.zeros(rows, np.int32)
    batch = np.empty((rows, row_size, 3), np.float32)
    for r, (k, begin) in enumerate(call):
      row = points[k][begin:begin + row_size]
      objects[r], batch[r, :len(row)], batch[r, len(row):] = k, row, row[0]
    objects[len(call):], batch[len(call):] = objects[0], batch[0]
    out = np.asarray(occupancy_fn(objects, batch), np.float32).reshape(rows, row_size)
    for r, (k, begin) in enumerate(call):
      real = min(row_size, len(points[k]) - begin)
      logits[k][begin:begin + real] = out[r, :real]
      stats['queries'] += real
    stats['padded_queries'] += rows * row_size
    stats['calls'] += 1
  stats['rounds'] += 1
  return logits


def _corners(grid):
  """The 8 corner views [n, n, n] of the cells of a point grid [n + 1]^3."""
  n = grid.shape[0] - 1
  return [grid[a:a + n, b:b + n, c:c + n] for a, b, c in _OFFSETS]


def _surface_cells(values, margin):
  return _crosses(_corners(values), margin)


def _crosses(corners, margin):
  """Cells that may hold surface, from their 8 corner values: a sign change, or a corner
  within `margin` of 0."""
  high, low = functools.reduce(np.maximum, corners), functools.reduce(np.minimum, corners)
  near = functools.reduce(np.minimum, [np.abs(c) for c in corners]) <= margin
  return ((high > 0) & (low <= 0)) | near


def _all_corners(known):
  return functools.reduce(np.logical_and, _corners(known))


def _cells_to_points(cells):
  """Points [n + 1]^3 that are a corner of at least one marked cell [n]^3."""
  n = cells.shape[0]
  points = np.zeros((n + 1,) * 3, bool)
  for a, b, c in _OFFSETS:
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
  # 'ascent' winds the faces counter-clockwise seen from where the logit is lower (outside):
  # outward normals by the right-hand rule, for closed and open surfaces alike. ('descent'
  # winds them inward; the sign of the enclosed volume used to repair closed meshes only.)
  verts, faces, _, _ = measure.marching_cubes(values, level=0.0, gradient_direction='ascent')
  low, high = bounds
  verts = low + verts.astype(np.float64) * ((high - low) / resolution)
  return trimesh.Trimesh(verts, faces, process=False)
