"""Shape Gaussians: projection, packing, sample moments, the mixture density against scipy,
reparameterised gradients, and jit/vmap."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from scipy.stats import multivariate_normal

from scenediff_jax.geometry import gmm

RNG = np.random.default_rng(0)
# Most checks go through jit: eager dispatch compiles every primitive of a new shape on its
# own and would make this file several times slower.
sample = jax.jit(gmm.sample, static_argnums=2)
log_likelihood = jax.jit(gmm.log_likelihood)


def _valid_params(g, batch=(), std=(0.03, 0.15)):
  """Random valid params [*batch, g, 16] in the canonical frame, as float32."""
  n = int(np.prod(batch, dtype=int)) * g
  mean = RNG.uniform(-0.3, 0.3, (n, 3))
  basis = Rotation.random(n, random_state=RNG).as_matrix()
  variances = RNG.uniform(*std, (n, 3)) ** 2
  logits = RNG.normal(size=n)
  params = gmm.join(mean, basis, variances, logits)
  return np.array(params, np.float32).reshape(batch + (g, gmm.GAUSSIAN_SIZE))


def test_gram_schmidt_orthonormal_right_handed_and_ordered():
  raw = RNG.normal(size=(500, 3, 3)).astype(np.float32)
  basis = np.asarray(gmm.gram_schmidt(raw))
  np.testing.assert_allclose(basis @ basis.swapaxes(-1, -2),
                             np.broadcast_to(np.eye(3), basis.shape), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(basis), 1.0, atol=1e-5)
  # In order: row 0 keeps its direction, row 1 stays in the span of rows 0 and 1.
  np.testing.assert_allclose(basis[:, 0], raw[:, 0] / np.linalg.norm(raw[:, 0], axis=-1)[:, None],
                             atol=1e-5)
  normal = np.cross(raw[:, 0], raw[:, 1])
  np.testing.assert_allclose(np.sum(basis[:, 1] * normal, -1), 0.0, atol=1e-3)


def test_gram_schmidt_keeps_rotations_and_project_is_idempotent():
  rotations = Rotation.random(100, random_state=RNG).as_matrix().astype(np.float32)
  np.testing.assert_allclose(gmm.gram_schmidt(rotations), rotations, atol=1e-6)
  noisy = RNG.normal(size=(4, 8, gmm.GAUSSIAN_SIZE)).astype(np.float32)
  once = gmm.project(noisy)
  np.testing.assert_allclose(gmm.project(once), once, atol=1e-6)
  np.testing.assert_allclose(jax.jit(gmm.project)(noisy), once, atol=1e-6)
  # Projection leaves the mean and weight columns alone.
  np.testing.assert_array_equal(once[..., :3], noisy[..., :3])
  np.testing.assert_array_equal(once[..., 15], noisy[..., 15])


def test_gram_schmidt_degenerate_rows_stay_finite():
  raw = jnp.zeros((2, 3, 3)).at[1, 0].set(jnp.array([1.0, 0.0, 0.0]))
  assert np.all(np.isfinite(gmm.gram_schmidt(raw)))
  grad = jax.jit(jax.grad(lambda r: jnp.sum(gmm.gram_schmidt(r))))(raw)
  assert np.all(np.isfinite(grad))


def test_split_join_round_trip_and_variance_clamp():
  params = _valid_params(5, batch=(3,))
  mean, basis, variances, log_weights = gmm.split(params)
  np.testing.assert_allclose(mean, params[..., :3])
  np.testing.assert_allclose(basis.reshape(3, 5, 9), params[..., 3:12], atol=1e-6)
  np.testing.assert_allclose(variances, params[..., 12:15])
  np.testing.assert_allclose(log_weights, jax.nn.log_softmax(params[..., 15]), atol=1e-6)
  np.testing.assert_allclose(np.exp(log_weights).sum(-1), 1.0, atol=1e-6)
  np.testing.assert_allclose(gmm.join(mean, basis, variances, params[..., 15]), params, atol=1e-6)
  np.testing.assert_allclose(gmm.project(params), params, atol=1e-6)

  bad = params.copy()
  bad[..., 12:15] = -np.abs(bad[..., 12:15])
  bad[0, 0, 12] = 0.0
  np.testing.assert_array_equal(gmm.split(bad)[2], np.float32(gmm.MIN_VARIANCE))
  np.testing.assert_array_equal(gmm.project(bad)[..., 12:15], np.float32(gmm.MIN_VARIANCE))


def test_covariance_matches_definition():
  params = _valid_params(4)
  basis = params[:, 3:12].reshape(4, 3, 3)
  expected = np.stack([b.T @ np.diag(v) @ b for b, v in zip(basis, params[:, 12:15])])
  np.testing.assert_allclose(gmm.covariance(params), expected, rtol=1e-5, atol=1e-8)


def test_sample_moments():
  params = _valid_params(3)
  n = 200_000
  x = np.asarray(sample(jax.random.key(0), params, n), np.float64)
  assert x.shape == (3, n, 3)
  cov = np.asarray(gmm.covariance(params), np.float64)
  var = np.diagonal(cov, axis1=-2, axis2=-1)
  # Each estimate is a mean of n i.i.d. terms; with Gaussian x the standard errors are
  # √(Σ_ii / n) for the mean and √((Σ_ii Σ_jj + Σ_ij²) / n) for the covariance. 5 standard
  # errors over 3 × 12 checks leaves a false failure rate below 1e-4 (fixed key anyway).
  mean_se = np.sqrt(var / n)
  np.testing.assert_array_less(np.abs(x.mean(1) - params[:, :3]), 5 * mean_se)
  cov_se = np.sqrt((var[:, :, None] * var[:, None, :] + cov ** 2) / n)
  sample_cov = np.einsum('gni,gnj->gij', x - params[:, None, :3], x - params[:, None, :3]) / n
  np.testing.assert_array_less(np.abs(sample_cov - cov), 5 * cov_se)


def test_log_likelihood_matches_scipy():
  params = _valid_params(3)
  params[:, 15] += 7.0  # unnormalised logits: only their softmax may matter
  points = RNG.uniform(-0.5, 0.5, (400, 3)).astype(np.float32)
  cov = np.asarray(gmm.covariance(params), np.float64)
  weights = np.exp(params[:, 15] - params[:, 15].max())
  weights /= weights.sum()
  reference = np.log(sum(w * multivariate_normal(m, c).pdf(points.astype(np.float64))
                         for w, m, c in zip(weights, params[:, :3].astype(np.float64), cov)))
  got = np.asarray(log_likelihood(points, params))
  assert got.shape == (400,)
  # Far points have log-densities in the hundreds; 1e-4 relative (plus a small absolute
  # floor near log p = 0) is what float32 arithmetic affords.
  np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)


def test_log_likelihood_reads_projected_params_and_integrates_to_one():
  params = _valid_params(3, std=(0.04, 0.1))
  noisy = params.copy()
  noisy[:, 3:12] *= 2.5  # a scaled basis projects back to the same one
  points = RNG.uniform(-0.5, 0.5, (50, 3)).astype(np.float32)
  np.testing.assert_allclose(log_likelihood(points, noisy), log_likelihood(points, params),
                             rtol=1e-5)
  # Midpoint rule on [−1, 1]³: spacing 1/40 is under half the smallest std (0.04) and the
  # means lie within 0.3 of the origin, so the mass outside the box and the discretisation
  # error are both far below the tolerance.
  ticks = (np.arange(80) + 0.5) / 40 - 1
  grid = np.stack(np.meshgrid(ticks, ticks, ticks, indexing='ij'), -1).reshape(-1, 3)
  density = np.exp(np.asarray(log_likelihood(grid.astype(np.float32), params), np.float64))
  assert density.mean() * 2.0 ** 3 == pytest.approx(1.0, abs=2e-3)


def test_reparameterised_gradients_reduce_the_loss():
  params = jnp.asarray(_valid_params(4))
  target = jnp.array([0.4, -0.2, 0.1])
  key = jax.random.key(3)

  @jax.jit
  def loss(p):
    x = gmm.sample(key, p, 256)
    return jnp.mean(jnp.sum((x - target) ** 2, -1))

  grad = np.asarray(jax.jit(jax.grad(loss))(params))
  assert np.all(np.isfinite(grad))
  # With ε fixed by the key, x = μ + (√v ⊙ ε) B gives ∂loss/∂v_j = mean over points of
  # (x − t)·b_j ε_j / √v_j, divided by g; ε is recovered from the samples themselves.
  x = np.asarray(sample(key, params, 256), np.float64)
  mean, basis, variances, _ = (np.asarray(a, np.float64) for a in jax.jit(gmm.split)(params))
  eps = np.einsum('gni,gji->gnj', x - mean[:, None], basis) / np.sqrt(variances)[:, None]
  along = np.einsum('gni,gji->gnj', x - np.asarray(target), basis)
  expected = np.mean(along * eps, 1) / np.sqrt(variances) / len(params)
  np.testing.assert_allclose(grad[:, 12:15], expected, rtol=1e-3, atol=1e-5)
  assert np.all(np.abs(grad[:, 12:15]) > 1e-3)
  np.testing.assert_allclose(grad[:, :3], 2 * np.mean(x - np.asarray(target), 1) / len(params),
                             rtol=1e-4, atol=1e-6)
  assert np.any(np.abs(grad[:, 3:12]) > 1e-3)
  assert loss(params - 0.05 * grad) < loss(params) - 1e-3
  assert np.all(np.isfinite(jax.jit(jax.grad(lambda p: gmm.log_likelihood(target[None], p).sum()))(
      params)))


def test_jit_vmap_and_broadcasting():
  params = _valid_params(4, batch=(3,))
  keys = jax.random.split(jax.random.key(4), 3)
  per_object = jax.vmap(sample, in_axes=(0, 0, None))(keys, params, 10)
  assert per_object.shape == (3, 4, 10, 3)
  for b in range(3):
    np.testing.assert_allclose(per_object[b], sample(keys[b], params[b], 10), atol=1e-6)
  # One key for a whole batch draws ε of the full shape; the same key, the same points.
  batched = sample(keys[0], params, 10)
  assert batched.shape == (3, 4, 10, 3) and np.all(np.isfinite(batched))
  assert not np.allclose(batched[0], batched[1])
  np.testing.assert_array_equal(sample(keys[0], params, 10), batched)
  assert not np.allclose(sample(keys[1], params, 10), batched)

  points = RNG.uniform(-0.5, 0.5, (3, 20, 3)).astype(np.float32)
  batched_ll = log_likelihood(points, params)
  assert batched_ll.shape == (3, 20)
  np.testing.assert_allclose(jax.vmap(log_likelihood)(points, params), batched_ll, rtol=1e-5)
  # One mixture shared by every point set broadcasts over the leading dimension.
  np.testing.assert_allclose(log_likelihood(points, params[0])[2],
                             log_likelihood(points[2], params[0]), rtol=1e-6)
  assert jax.jit(gmm.covariance)(params).shape == (3, 4, 3, 3)


def test_transform_moves_the_mixture_like_its_points():
  key = jax.random.key(7)
  spread = jnp.array([0.2] * 3 + [1.0] * 9 + [0.01] * 3 + [1.0])
  params = gmm.project(jax.random.normal(key, (2, 3, 16)) * spread)
  params = params.at[..., 12:15].set(jnp.abs(params[..., 12:15]) + 1e-3)
  angle = jnp.array([0.4, -1.1])
  c, s = jnp.cos(angle), jnp.sin(angle)
  z, o = jnp.zeros(2), jnp.ones(2)
  rotation = jnp.stack([jnp.stack([c, z, s], -1), jnp.stack([z, o, z], -1),
                        jnp.stack([-s, z, c], -1)], -2)
  scale, shift = jnp.array([0.8, 1.2]), jnp.array([[0.1, -0.2, 0.3], [0.0, 0.05, -0.3]])
  moved = gmm.transform(params, rotation, scale, shift)
  # Samples of the moved mixture = moved samples of the original (same noise).
  a = gmm.sample(key, moved, 8)
  b = gmm.sample(key, params, 8)
  b = scale[:, None, None, None] * jnp.einsum('bij,bgnj->bgni', rotation, b) + shift[:, None, None]
  np.testing.assert_allclose(a, b, atol=1e-5)
  # Densities: p_moved(s·R·x + t) = p(x) / s³.
  x = jax.random.normal(jax.random.key(8), (2, 50, 3)) * 0.3
  y = scale[:, None, None] * jnp.einsum('bij,bnj->bni', rotation, x) + shift[:, None]
  np.testing.assert_allclose(gmm.log_likelihood(y, moved),
                             gmm.log_likelihood(x, params) - 3 * jnp.log(scale)[:, None], atol=1e-4)


def test_mahalanobis_distances_match_the_inverse_covariance():
  params = _valid_params(3)
  points = RNG.uniform(-0.5, 0.5, (50, 3)).astype(np.float32)
  inverse = np.linalg.inv(np.asarray(gmm.covariance(params), np.float64))
  diff = points[None] - params[:, None, :3]
  expected = np.einsum('gni,gij,gnj->gn', diff, inverse, diff)
  np.testing.assert_allclose(gmm.mahalanobis_sq(points, params), expected, rtol=1e-3)


def test_axis_points_lie_on_the_principal_axes_at_the_asked_deviations():
  params = _valid_params(2)
  points = np.asarray(gmm.axis_points(params, per_axis=5, extent=2.0)).reshape(2, 3, 5, 3)
  # Each Gaussian's own points, at t = −2, −1, 0, 1, 2 standard deviations along each axis.
  own = np.stack([np.asarray(gmm.mahalanobis_sq(points[g].reshape(15, 3), params[g:g + 1]))[0]
                  for g in range(2)]).reshape(2, 3, 5)
  np.testing.assert_allclose(np.sqrt(own), np.broadcast_to([2, 1, 0, 1, 2], own.shape), atol=1e-3)
  basis = params[:, 3:12].reshape(2, 3, 3)
  along = points[:, :, -1] - points[:, :, 2]  # +2σ minus the mean, per axis
  cosine = np.sum(along * basis, -1) / np.linalg.norm(along, axis=-1)
  np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
  # A scene part with no object to mesh: no points, not an error.
  assert gmm.axis_points(np.zeros((0, 4, 16), np.float32), per_axis=5).shape == (0, 60, 3)
