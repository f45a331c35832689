"""SPAGHETTI-style shape Gaussians: the 16-number layout, projection to valid parameters,
covariances, reparameterised sampling and the mixture log-likelihood, in JAX.

An object's shape is g anisotropic 3D Gaussians in its canonical frame [−0.5, 0.5]³. One
Gaussian is 16 numbers:

  [mean (3), basis (9), variances (3), weight (1)]

- basis: a 3×3 matrix B stored row-major whose rows are the principal axes (orthonormal,
  det B = +1), so the covariance is Σ = Bᵀ diag(variances) B;
- variances: the variances along those axes, at least MIN_VARIANCE;
- weight: an unnormalised mixing logit, the mixture weights being π = softmax over the g
  Gaussians of one object.

The diffusion model denoises in this raw 16-vector space, so a vector may be invalid (a
non-orthonormal basis, negative variances); `project` maps it to the nearest-in-spirit valid
parameters and every other function reads its parameters through that projection. All
functions are pure jax.numpy: jit-, vmap- and grad-friendly, with leading dimensions
broadcast.
"""
import math

import jax
import jax.numpy as jnp

GAUSSIAN_SIZE = 16
MIN_VARIANCE = 1e-6
_NORM_EPS = 1e-12  # floor on squared norms: keeps degenerate rows finite, in value and grad


def _normalize(v):
  # max() rather than adding eps, so unit vectors come back unchanged (project stays
  # idempotent) and a zero vector gives zero instead of NaN.
  sq = jnp.sum(v * v, -1, keepdims=True)
  return v * jax.lax.rsqrt(jnp.maximum(sq, _NORM_EPS))


def gram_schmidt(raw):
  """Orthonormalises the rows of raw [..., 3, 3] in order; the result has det +1.

  Row 0 is normalised, row 1 loses its component along row 0 and is normalised, and row 2 is
  their cross product (so only its handedness, not its value, is taken from the input). A zero
  or parallel row gives zero rows, not NaN, in value and gradient.
  """
  e0 = _normalize(raw[..., 0, :])
  r1 = raw[..., 1, :]
  e1 = _normalize(r1 - jnp.sum(r1 * e0, -1, keepdims=True) * e0)
  return jnp.stack([e0, e1, jnp.cross(e0, e1)], -2)


def split(params):
  """Params [..., g, 16] → valid (mean, basis, variances, log_weights).

  Shapes [..., g, 3], [..., g, 3, 3], [..., g, 3], [..., g]: the basis orthonormalised, the
  variances clamped to at least MIN_VARIANCE and the log mixture weights normalised over g.
  """
  params = jnp.asarray(params)
  mean, basis, variances, weight = _unpack(params)
  return (mean, gram_schmidt(basis), jnp.maximum(variances, MIN_VARIANCE),
          jax.nn.log_softmax(weight, axis=-1))


def _unpack(params):
  basis = params[..., 3:12].reshape(params.shape[:-1] + (3, 3))
  return params[..., :3], basis, params[..., 12:15], params[..., 15]


def join(mean, basis, variances, weight_logits):
  """Packs mean [..., g, 3], basis [..., g, 3, 3], variances [..., g, 3] and weight logits
  [..., g] into params [..., g, 16]; the inverse of `split` up to the weights' normalisation.
  """
  basis = jnp.asarray(basis)
  return jnp.concatenate([jnp.asarray(mean), basis.reshape(basis.shape[:-2] + (9,)),
                          jnp.asarray(variances), jnp.asarray(weight_logits)[..., None]], -1)


def project(params):
  """Params [..., g, 16] → valid params [..., g, 16]; idempotent.

  Orthonormalises the basis and clamps the variances; the weight logits are always valid and
  pass through unchanged.
  """
  params = jnp.asarray(params)
  mean, basis, variances, weight = _unpack(params)
  return join(mean, gram_schmidt(basis), jnp.maximum(variances, MIN_VARIANCE), weight)


def covariance(params):
  """Covariances Σ = Bᵀ diag(variances) B [..., g, 3, 3] of params [..., g, 16]."""
  _, basis, variances, _ = split(params)
  return jnp.einsum('...ji,...j,...jk->...ik', basis, variances, basis)


def sample(key, params, points_per_gaussian):
  """Draws points [..., g, m, 3] from each Gaussian of params [..., g, 16], m per Gaussian.

  Reparameterised, x = mean + (√variances ⊙ ε) B with ε ~ N(0, I) drawn from `key` in one
  call of the full shape, so the points are differentiable in mean, basis and variances and
  fixed for a given key. The mixture weights play no part: every Gaussian gets m points.
  """
  mean, basis, variances, _ = split(params)
  shape = mean.shape[:-1] + (points_per_gaussian, 3)
  eps = jax.random.normal(key, shape, mean.dtype)
  return mean[..., None, :] + (jnp.sqrt(variances)[..., None, :] * eps) @ basis


def axis_points(params, per_axis=9, extent=2.0):
  """Points [..., g · 3 · per_axis, 3] along each Gaussian's principal axes, from −extent to
  +extent standard deviations: where its part lies, deterministically (the mesh extraction's
  seeds, inference/mesh.py)."""
  mean, basis, variances, _ = split(params)
  steps = jnp.linspace(-extent, extent, per_axis, dtype=mean.dtype)
  # [..., g, axis, step, 3]: mean + t · σ_axis · (row `axis` of the basis)
  offsets = steps[:, None] * (jnp.sqrt(variances)[..., :, None, None] * basis[..., :, None, :])
  points = mean[..., None, None, :] + offsets
  return points.reshape(*mean.shape[:-2], mean.shape[-2] * 3 * per_axis, 3)  # also for 0 objects


def log_likelihood(points, params):
  """Log-density [..., N] of the mixture params [..., g, 16] at points [..., N, 3].

  log Σ_k π_k N(x; μ_k, Σ_k) of the projected parameters, by logsumexp over k. The Mahalanobis
  distance is taken in each Gaussian's principal axes, so no matrix is inverted.
  """
  _, _, variances, log_weights = split(params)
  mahalanobis = mahalanobis_sq(points, params)
  log_norm = -0.5 * (jnp.sum(jnp.log(variances), -1) + 3 * math.log(2 * math.pi))
  log_components = log_norm[..., None] - 0.5 * mahalanobis + log_weights[..., None]
  return jax.nn.logsumexp(log_components, axis=-2)


def mahalanobis_sq(points, params):
  """Squared Mahalanobis distances [..., g, N] of points [..., N, 3] to each Gaussian of
  params [..., g, 16], taken in its principal axes (no matrix is inverted)."""
  mean, basis, variances, _ = split(params)
  diff = jnp.asarray(points)[..., None, :, :] - mean[..., :, None, :]  # [..., g, N, 3]
  local = diff @ jnp.swapaxes(basis, -1, -2)  # coordinates along the principal axes
  return jnp.sum(local * local / variances[..., None, :], -1)


def transform(params, rotation, scale, translation):
  """Gaussians [..., g, 16] after x ↦ s·R·x + t (R [..., 3, 3], s [...], t [..., 3]).

  Means move like points, principal axes turn with R (rows of B: B ↦ B·Rᵀ) and variances
  scale by s²: the mixture of the moved shape. Weights are unchanged.
  """
  mean, basis, variances, log_weights = split(params)
  s = jnp.asarray(scale)[..., None, None]
  mean = s * jnp.einsum('...ij,...gj->...gi', rotation, mean) + translation[..., None, :]
  basis = jnp.einsum('...gij,...kj->...gik', basis, rotation)
  return join(mean, basis, variances * s ** 2, log_weights)
