"""What the denoiser predicts: the noise ε (the paper's), the clean data x₀, or the velocity
v = √ᾱ_t ε − √(1 − ᾱ_t) x₀ (Salimans & Ho 2022), and the conversions between them.

With x_t = α x₀ + σ ε (α = √ᾱ_t, σ = √(1 − ᾱ_t), α² + σ² = 1), each prediction fixes the
other two at the same (x_t, t). Every conversion below is written so that no coefficient is
divided by one that can vanish: ε → x₀ divides by α (as the paper's recipe must), x₀ → ε by
σ, and v needs no division at all.
"""
import jax

from scenediff_jax.diffusion.schedule import _at

PREDICTIONS = ('eps', 'x0', 'v')


def prediction_of(config) -> str:
  """config.diffusion.prediction; 'eps' (the paper's) where absent, as in workdirs trained
  before it was a choice."""
  prediction = config.diffusion.get('prediction', 'eps')
  if prediction not in PREDICTIONS:
    raise ValueError(f"config.diffusion.prediction must be one of {', '.join(PREDICTIONS)}, "
                     f'not {prediction!r}.')
  return prediction


def _coefficients(schedule, t, x):
  return _at(schedule.sqrt_alphas_cumprod, t, x), _at(schedule.sqrt_one_minus_alphas_cumprod, t, x)


def target(schedule, prediction, x0, eps, t):
  """What the network learns to output for clean x0 noised with eps at t (pytrees)."""
  if prediction == 'eps':
    return eps
  if prediction == 'x0':
    return x0

  def velocity(x, e):
    alpha, sigma = _coefficients(schedule, t, x)
    return alpha * e - sigma * x
  return jax.tree.map(velocity, x0, eps)


def x0_and_eps(schedule, prediction, x_t, t, output):
  """(x̂₀, ε̂) of a network `output` at (x_t, t), each pytrees like x_t."""
  def convert(x, out):
    alpha, sigma = _coefficients(schedule, t, x)
    if prediction == 'eps':
      return (x - sigma * out) / alpha, out
    if prediction == 'x0':
      return out, (x - alpha * out) / sigma
    return alpha * x - sigma * out, sigma * x + alpha * out  # v
  pairs = jax.tree.map(convert, x_t, output)
  is_pair = lambda node: isinstance(node, tuple)
  return (jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
          jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair))


def predict_x0(schedule, prediction, x_t, t, output):
  """x̂₀ of a network output (see x0_and_eps)."""
  return x0_and_eps(schedule, prediction, x_t, t, output)[0]
