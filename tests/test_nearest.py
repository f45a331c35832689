"""The tiled nearest-neighbour kernel: exact against scipy's KD-tree, tiling-invariant,
differentiable, and usable as the L_align loss."""
import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree

from scenediff_jax.geometry import nearest_index, nearest_sq_dist
from scenediff_jax.geometry.nearest import _first_min_index

RNG = np.random.default_rng(0)


def _clouds(batch=(2,), m=700, n=1900, offset=4.0):
  q = (RNG.normal(size=batch + (m, 3)) + offset).astype(np.float32)
  p = (RNG.normal(size=batch + (n, 3)) + offset).astype(np.float32)
  return q, p


def test_matches_kdtree_and_index_agrees():
  q, p = _clouds()
  d2 = np.asarray(nearest_sq_dist(q, p, query_tile=128, point_tile=256))
  index = np.asarray(nearest_index(q, p, query_tile=128, point_tile=256))
  for b in range(2):
    dist, idx = cKDTree(p[b]).query(q[b])
    np.testing.assert_allclose(d2[b], dist ** 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum((q[b] - p[b][index[b]]) ** 2, -1), dist ** 2, rtol=1e-5,
                               atol=1e-6)


def test_tiling_does_not_change_the_answer():
  q, p = _clouds(batch=(), m=333, n=1001)
  untiled = nearest_sq_dist(q, p, query_tile=10_000, point_tile=10_000)
  for tiles in ((1, 7), (64, 1001), (333, 100), (50, 3)):
    np.testing.assert_array_equal(nearest_sq_dist(q, p, query_tile=tiles[0], point_tile=tiles[1]),
                                  untiled)


def test_broadcasting_and_point_mask():
  q, p = _clouds(batch=(3,), m=50, n=80)
  shared = nearest_sq_dist(q, p[0])  # one point set for every query set
  np.testing.assert_allclose(shared[2], nearest_sq_dist(q[2], p[0]), rtol=1e-6)
  mask = np.zeros((3, 80), bool)
  mask[:, :20] = True
  np.testing.assert_allclose(nearest_sq_dist(q, p, mask), nearest_sq_dist(q, p[:, :20]), rtol=1e-6)


def test_gradient_equals_dense_autodiff_and_pulls_points_together():
  q, p = _clouds(batch=(2,), m=200, n=300)
  loss = lambda q, p: jnp.mean(nearest_sq_dist(q, p, query_tile=64, point_tile=128))
  dense = lambda q, p: jnp.mean(
      jnp.min(jnp.sum((q[..., :, None, :] - p[..., None, :, :]) ** 2, -1), -1))
  gq, gp = jax.jit(jax.grad(loss, argnums=(0, 1)))(q, p)
  rq, rp = jax.grad(dense, argnums=(0, 1))(q, p)
  np.testing.assert_allclose(gq, rq, atol=1e-6)
  np.testing.assert_allclose(gp, rp, atol=1e-6)
  assert np.all(np.isfinite(gp))
  # As the L_align loss (depth points → predicted points), gradient steps on the predicted
  # points move them toward the depth points.
  before = float(loss(q, p))
  after = float(loss(q, p - 5.0 * gp))
  assert after < before


def test_vmaps_over_objects_like_the_training_loss():
  q, p = _clouds(batch=(4,), m=64, n=96)
  per_object = jax.vmap(lambda a, b: jnp.mean(nearest_sq_dist(a, b)))(q, p)
  np.testing.assert_allclose(per_object, np.mean(nearest_sq_dist(q, p), -1), rtol=1e-6)


def test_ties_go_to_the_first_point_like_argmin():
  # Every point appears twice, once in each half (so in different tiles), and some twice
  # more inside one tile: the index must be the first copy, as a dense argmin gives.
  base = RNG.normal(size=(300, 3)).astype(np.float32)
  p = np.concatenate([base, base[:40], base])
  q = base[RNG.integers(0, 300, 500)] + 1e-3
  index = np.asarray(nearest_index(q, p, point_tile=64))
  dense = np.argmin(np.sum((q[:, None] - p[None]) ** 2, -1), 1)
  np.testing.assert_array_equal(index, dense)
  assert np.all(index < 300)


def test_first_min_index_is_argmin_with_ties_and_infinities():
  x = RNG.integers(0, 4, (6, 50)).astype(np.float32)
  x[2] = np.inf  # a query with no valid point
  for axis in (0, 1):
    np.testing.assert_array_equal(_first_min_index(jnp.asarray(x), axis), np.argmin(x, axis))
