"""Diffusion: the noise schedules, what the network predicts (ε, x₀ or v) and the loss
weighting over t, DDPM/DDIM samplers, classifier-free guidance and the fixed input of the
regression ablation.

Pure jax.numpy over pytree states (one timestep per batch element); stands on nothing of
ours but jax, so models, training and inference can all import it.
"""
from scenediff_jax.diffusion.guidance import drop_condition_mask, guided_denoise_fn
from scenediff_jax.diffusion.parametrization import (
                                              PREDICTIONS,
                                              predict_x0,
                                              prediction_of,
                                              target,
                                              x0_and_eps,
)
from scenediff_jax.diffusion.regression import is_regression, regression_input
from scenediff_jax.diffusion.samplers import (
                                              ddim_sample,
                                              ddim_sample_over,
                                              ddim_step,
                                              ddim_timesteps,
                                              ddpm_sample,
                                              ddpm_step,
                                              tree_normal,
)
from scenediff_jax.diffusion.schedule import (
                                              SCHEDULES,
                                              NoiseSchedule,
                                              cosine_schedule,
                                              linear_schedule,
                                              make_schedule,
)
from scenediff_jax.diffusion.weighting import WEIGHTINGS, loss_weights, signal_fraction
