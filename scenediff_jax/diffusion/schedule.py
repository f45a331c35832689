"""The noise schedule: forward noising q(x_t | x_0), its inverses and the posterior.

PAPER.md "Diffusion": T = 1000 steps, β linear from 1e-4 to 0.02 (`linear_schedule`). The
cosine schedule (Nichol & Dhariwal 2021, `cosine_schedule`) spends fewer timesteps at
signal-to-noise ratios near 0, where a linear schedule's last third carries no signal.

Timesteps follow the DDPM reference code: t ∈ {0, …, T−1}, and x_t at index t has been
noised with ᾱ_t = alphas_cumprod[t], so t = 0 is the first noising step (ᾱ_0 = 1 − β_0, not
1) and "t − 1 = −1" means clean data (ᾱ = 1).

The diffused state is a pytree (a dict of arrays, one per scene part). Every leaf has the
batch as its leading dimension and there is one timestep per batch element: t is int32 [B]
(or a scalar, shared by the batch) and is broadcast over each leaf's trailing dimensions.
All methods are pure jax.numpy and jit-able; the schedule itself is a pytree, so it may be
passed through jit as an argument or closed over as constants.
"""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


def _at(values, t, x):
  """values[t] shaped to broadcast against leaf x [B, ...] (t is [B] or a scalar)."""
  t = jnp.asarray(t)
  v = values[t]
  return v.reshape(t.shape + (1,) * (jnp.ndim(x) - t.ndim)).astype(jnp.result_type(x))


@flax.struct.dataclass
class NoiseSchedule:
  """Per-timestep coefficients [T], float32, derived in float64 (see `linear_schedule`).

  Besides β, α and ᾱ it keeps the quantities that lose precision when derived from a
  float32 ᾱ near t = 0 (1 − ᾱ_0 = 1e-4): √ᾱ, √(1 − ᾱ), log ᾱ and the posterior's terms.
  """
  betas: jax.Array
  alphas: jax.Array
  alphas_cumprod: jax.Array
  sqrt_alphas_cumprod: jax.Array
  sqrt_one_minus_alphas_cumprod: jax.Array
  log_alphas_cumprod: jax.Array
  posterior_variances: jax.Array  # β̃_t; 0 at t = 0
  posterior_mean_coef_x0: jax.Array
  posterior_mean_coef_xt: jax.Array
  snr: jax.Array  # ᾱ_t / (1 − ᾱ_t), the signal-to-noise ratio of x_t
  num_timesteps: int = flax.struct.field(pytree_node=False)

  def add_noise(self, x0, t, noise):
    """Forward noising: x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε, leaf by leaf."""
    return jax.tree.map(
        lambda x, n: _at(self.sqrt_alphas_cumprod, t, x) * x
        + _at(self.sqrt_one_minus_alphas_cumprod, t, x) * n, x0, noise)

  def predict_x0(self, x_t, t, eps):
    """x̂0 = (x_t − √(1 − ᾱ_t) · ε) / √ᾱ_t: the inverse of `add_noise` in x0."""
    return jax.tree.map(
        lambda x, e: (x - _at(self.sqrt_one_minus_alphas_cumprod, t, x) * e)
        / _at(self.sqrt_alphas_cumprod, t, x), x_t, eps)

  def predict_eps(self, x_t, t, x0):
    """ε = (x_t − √ᾱ_t · x0) / √(1 − ᾱ_t): the inverse of `add_noise` in the noise."""
    return jax.tree.map(
        lambda x, z: (x - _at(self.sqrt_alphas_cumprod, t, x) * z)
        / _at(self.sqrt_one_minus_alphas_cumprod, t, x), x_t, x0)

  def posterior_mean(self, x0, x_t, t):
    """Mean of q(x_{t−1} | x_t, x0) (DDPM eq. 7); at t = 0 it is x0 itself."""
    return jax.tree.map(
        lambda z, x: _at(self.posterior_mean_coef_x0, t, x) * z
        + _at(self.posterior_mean_coef_xt, t, x) * x, x0, x_t)

  def posterior_variance(self, t):
    """β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), shaped like t; 0 at t = 0."""
    return self.posterior_variances[jnp.asarray(t)]

  def sample_timesteps(self, key, batch_size):
    """Training timesteps, int32 [batch_size], uniform in [0, T)."""
    return jax.random.randint(key, (batch_size,), 0, self.num_timesteps, jnp.int32)


def linear_schedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.02):
  """The DDPM linear-β schedule (the paper's: 1000 steps, 1e-4 to 0.02)."""
  _check_length(num_timesteps)
  return schedule_from_betas(np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64))


COSINE_OFFSET = 0.008  # s of Nichol & Dhariwal: keeps β_0 from vanishing
MAX_BETA = 0.999  # their clip, so that the last step keeps a little of the signal


def cosine_schedule(num_timesteps=1000):
  """ᾱ(τ) = cos²(π/2 · (τ/T + s)/(1 + s)) / cos²(π/2 · s/(1 + s)), with x_t at index t
  noised for t + 1 steps (ᾱ_t = ᾱ(t + 1)); β clipped at MAX_BETA."""
  _check_length(num_timesteps)
  f = lambda tau: np.cos(np.pi / 2 * (tau / num_timesteps + COSINE_OFFSET)
                         / (1 + COSINE_OFFSET)) ** 2
  tau = np.arange(num_timesteps + 1, dtype=np.float64)
  alphas_cumprod = f(tau) / f(0.0)
  betas = np.clip(1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0.0, MAX_BETA)
  return schedule_from_betas(betas)


SCHEDULES = {'linear': linear_schedule, 'cosine': cosine_schedule}


def make_schedule(config) -> NoiseSchedule:
  """The schedule `config.diffusion` names (`schedule`: 'linear', the paper's, when absent,
  as in workdirs trained before it was a choice)."""
  d = config.diffusion
  name = d.get('schedule', 'linear')
  if name == 'linear':
    return linear_schedule(d.num_timesteps, d.beta_start, d.beta_end)
  if name == 'cosine':
    return cosine_schedule(d.num_timesteps)
  raise ValueError(f"config.diffusion.schedule must be one of {', '.join(SCHEDULES)}, "
                   f'not {name!r}.')


def _check_length(num_timesteps):
  if num_timesteps < 1:
    raise ValueError(f'num_timesteps must be positive, got {num_timesteps}')


def schedule_from_betas(betas) -> NoiseSchedule:
  """Every coefficient of the schedule of `betas` [T], derived in float64."""
  betas = np.asarray(betas, np.float64)
  alphas = 1.0 - betas
  alphas_cumprod = np.cumprod(alphas)
  alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
  one_minus = 1.0 - alphas_cumprod
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  return NoiseSchedule(
      betas=f32(betas), alphas=f32(alphas), alphas_cumprod=f32(alphas_cumprod),
      sqrt_alphas_cumprod=f32(np.sqrt(alphas_cumprod)),
      sqrt_one_minus_alphas_cumprod=f32(np.sqrt(one_minus)),
      log_alphas_cumprod=f32(np.cumsum(np.log1p(-betas))),
      posterior_variances=f32(betas * (1.0 - alphas_cumprod_prev) / one_minus),
      posterior_mean_coef_x0=f32(betas * np.sqrt(alphas_cumprod_prev) / one_minus),
      posterior_mean_coef_xt=f32((1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / one_minus),
      snr=f32(alphas_cumprod / one_minus),
      num_timesteps=len(betas))
