"""The denoiser's x̂₀ error per band of noise level: how well one network call recovers the
scene from x_t, whatever the network predicts (ε, x₀ or v) and whatever the schedule.

Bands are of the signal-to-noise ratio SNR_t = ᾱ_t / (1 − ᾱ_t), so that schedules compare
at equal noise: in each band the timesteps of the schedule whose SNR falls in it are drawn
uniformly, every scene noised once per band with its own draw. Errors are in normalised
units, masked like the losses (real objects; the layout where the scene has one; shapes of
objects with ground truth).
"""
import jax
import jax.numpy as jnp
import numpy as np

from scenediff_jax import diffusion
from scenediff_jax.models.scene_model import SceneModel

# (name, lowest SNR, highest SNR): from nearly clean to nearly pure noise.
SNR_BANDS = (('snr>10', 10.0, np.inf), ('snr 1-10', 1.0, 10.0), ('snr 0.1-1', 0.1, 1.0),
             ('snr<0.1', 0.0, 0.1))
DIFFUSED = ('layout', 'pose', 'gaussians', 'intrinsics')


def band_timesteps(schedule):
  """{band name: int32 array of the schedule's timesteps in that band} (empty bands left out)."""
  snr = np.asarray(schedule.snr, np.float64)
  bands = {}
  for name, low, high in SNR_BANDS:
    t = np.nonzero((snr >= low) & (snr < high))[0]
    if len(t):
      bands[name] = t.astype(np.int32)
  return bands


def make_band_error_fn(model, schedule, config):
  """error(params, batch, key, t) → (pose squared-error sum, shape sum, pose count, shape
  count), jitted once for every band: the timesteps t [B] are an input."""
  prediction = diffusion.prediction_of(config)

  @jax.jit
  def error(params, batch, key, t):
    x0 = {k: batch[k] for k in DIFFUSED}
    x_t = schedule.add_noise(x0, t, diffusion.tree_normal(key, x0))
    y = model.apply(params, batch, method=SceneModel.condition)
    output = model.apply(params, x_t, t, y, batch['mask'], method=SceneModel.denoise)
    x0_hat = diffusion.predict_x0(schedule, prediction, x_t, t, output)
    sq = jax.tree.map(lambda a, b: jnp.square(a - b), x0_hat, x0)
    mask = batch['mask'].astype(jnp.float32)
    layout_mask = batch['layout_mask'].astype(jnp.float32)
    pose_sum = jnp.sum(sq['pose'] * mask[..., None]) + jnp.sum(sq['layout'] * layout_mask[:, None])
    pose_count = 7 * (jnp.sum(mask) + jnp.sum(layout_mask))
    shaped = (batch['mask'] & batch['has_shape']).astype(jnp.float32)
    shape_sum = (jnp.sum(jnp.mean(sq['gaussians'], (-1, -2)) * shaped)
                 + jnp.sum(jnp.mean(sq['intrinsics'], (-1, -2)) * shaped))
    return pose_sum, shape_sum, pose_count, jnp.sum(shaped)

  return error


def x0_error_by_band(model, schedule, config, params, batches, seed=0) -> dict:
  """{band: {'pose': x̂₀-MSE of poses and layouts, 'shape': of Gaussians + intrinsics}} over
  `batches` (model batches of normalised scenes). Regression models have one input and no
  bands: {}."""
  if diffusion.is_regression(config):
    return {}
  error = make_band_error_fn(model, schedule, config)
  totals = {}
  for b, batch in enumerate(batches):
    for i, (name, t) in enumerate(band_timesteps(schedule).items()):
      key = jax.random.fold_in(jax.random.key(seed), 1000 * b + i)
      k_t, k_noise = jax.random.split(key)
      batch_size = batch['mask'].shape[0]
      drawn = jnp.asarray(t)[jax.random.randint(k_t, (batch_size,), 0, len(t))]
      values = np.asarray(jax.device_get(error(params, batch, k_noise, drawn)), np.float64)
      totals[name] = totals.get(name, 0) + values
  return {name: {'pose': float(v[0] / max(v[2], 1)), 'shape': float(v[1] / max(v[3], 1))}
          for name, v in totals.items()}
