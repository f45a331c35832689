"""Per-scene loss weights as functions of the timestep, stated in x₀ units.

Every denoising MSE is some weight times the x₀-MSE at the same t: ε-MSE = SNR · x₀-MSE and
v-MSE = (1 + SNR) · x₀-MSE. Under the paper's recipe (ε, linear β, uniform t) the timesteps
with SNR < 1, where the image alone must decide the scene, carry 0.3% of the x₀-weighted
loss. A weighting names the x₀ weight w(t) it wants; `loss_weights` divides out the weight
that the prediction's own MSE already carries, so the loss is w(t) · x₀-MSE whatever the
network predicts:
  none         the prediction's own MSE, unweighted (w = SNR for ε, 1 for x₀, 1 + SNR for v)
  min_snr      w = min(SNR, γ)          (Hang et al. 2023: caps the nearly clean timesteps)
  clamped_snr  w = clip(SNR, 1, γ)      (min-SNR, and at least the regression loss's weight:
                                         the top timestep trains exactly the x₀ regression)
"""
import jax.numpy as jnp

WEIGHTINGS = ('none', 'min_snr', 'clamped_snr')


def x0_weight(snr, weighting, gamma):
  """w(t): the weight on the x₀-MSE at signal-to-noise ratio `snr` (any shape)."""
  if weighting == 'min_snr':
    return jnp.minimum(snr, gamma)
  if weighting == 'clamped_snr':
    return jnp.clip(snr, 1.0, gamma)
  raise ValueError(f"Loss weighting must be one of {', '.join(WEIGHTINGS)}, not {weighting!r}.")


def own_x0_weight(snr, prediction):
  """The x₀ weight that the MSE of `prediction` itself carries."""
  return {'eps': snr, 'x0': jnp.ones_like(snr), 'v': 1.0 + snr}[prediction]


def loss_weights(schedule, t, prediction, weighting='none', gamma=5.0):
  """float32 [B]: the factor on each scene's MSE in the prediction's own units, so that the
  loss is x0_weight(SNR_t) · x₀-MSE (1 everywhere for 'none')."""
  if weighting == 'none':
    return jnp.ones(jnp.shape(t), jnp.float32)
  snr = schedule.snr[t]
  return x0_weight(snr, weighting, gamma) / own_x0_weight(snr, prediction)


def signal_fraction(schedule, t):
  """ᾱ_t = SNR / (1 + SNR) [B]: the share of x_t that is signal. Weights L_align per scene:
  at high noise x̂₀ is a posterior mean, a blur between possible scenes that lies on no
  surface, and pulling it onto the depth points fights the denoising loss."""
  return schedule.alphas_cumprod[t]
