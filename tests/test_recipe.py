"""The diffusion recipe's choices (docs/recipe.md): what the network predicts (ε, x₀, v), the
loss weighting over t, the cosine schedule, the latent normalisation; each against an
independent reference, an oracle network or a round trip."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_bundle_integrity import PLATFORM, fresh  # noqa: F401  (a module fixture)

from scenediff_jax import diffusion
from scenediff_jax.diffusion import weighting
from scenediff_jax.geometry.normalization import SceneStatistics, ShapeLatents
from scenediff_jax.training import losses, scene_data

T = 1000
SCHEDULES = {'linear': diffusion.linear_schedule(), 'cosine': diffusion.cosine_schedule()}
RNG = np.random.default_rng(0)


def _tree(batch=6, n=3, g=4, d=5):
  shapes = {'layout': (batch, 7), 'pose': (batch, n, 7), 'gaussians': (batch, n, g, 16),
            'intrinsics': (batch, n, g, d)}
  return {k: RNG.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_cosine_schedule_follows_its_formula():
  s = SCHEDULES['cosine']
  f = lambda tau: np.cos(np.pi / 2 * (tau / T + 0.008) / 1.008) ** 2
  expected = f(np.arange(1, T + 1)) / f(0)  # x_t at index t: noised for t + 1 steps
  # Up to the last steps, where β reaches the 0.999 clip (ᾱ then falls faster than f).
  np.testing.assert_allclose(s.alphas_cumprod[:-2], expected[:-2], rtol=2e-4, atol=1e-7)
  assert np.all(np.diff(np.asarray(s.alphas_cumprod)) < 0) and s.betas.max() <= 0.999 + 1e-6
  np.testing.assert_allclose(s.snr[:-2], expected[:-2] / (1 - expected[:-2]), rtol=2e-4)
  # The cosine schedule keeps more of the timesteps at SNR ≥ 0.1 than the linear one.
  share = lambda sch: np.mean(np.asarray(sch.snr) >= 0.1)
  assert share(SCHEDULES['cosine']) > share(SCHEDULES['linear']) + 0.1


@pytest.mark.parametrize('name', SCHEDULES)
@pytest.mark.parametrize('prediction', diffusion.PREDICTIONS)
def test_conversions_round_trip_at_every_t(name, prediction):
  schedule = SCHEDULES[name]
  t = np.arange(T, dtype=np.int32)
  x0, eps = _tree(batch=T), _tree(batch=T)
  x_t = schedule.add_noise(x0, t, eps)
  out = diffusion.target(schedule, prediction, x0, eps, t)
  x0_back, eps_back = diffusion.x0_and_eps(schedule, prediction, x_t, t, out)
  alpha = np.asarray(schedule.sqrt_alphas_cumprod, np.float64)
  sigma = np.asarray(schedule.sqrt_one_minus_alphas_cumprod, np.float64)
  for k in x0:
    shape = (-1,) + (1,) * (x0[k].ndim - 1)
    # float32 rounding of x_t, amplified by the division each conversion must make: ε → x₀
    # divides by α, x₀ → ε by σ; v divides by nothing.
    x0_gain = {'eps': 1 / alpha, 'x0': 0 * alpha, 'v': 1 + 0 * alpha}[prediction]
    eps_gain = {'eps': 0 * sigma, 'x0': 1 / sigma, 'v': 1 + 0 * sigma}[prediction]
    err_x0 = np.abs(np.asarray(x0_back[k], np.float64) - x0[k])
    err_eps = np.abs(np.asarray(eps_back[k], np.float64) - eps[k])
    assert np.all(err_x0 <= 2e-6 * (1 + x0_gain.reshape(shape)) * 8), (k, err_x0.max())
    assert np.all(err_eps <= 2e-6 * (1 + eps_gain.reshape(shape)) * 8), (k, err_eps.max())
    # And the target is what the definition says.
    if prediction == 'v':
      v = alpha.reshape(shape) * eps[k] - sigma.reshape(shape) * x0[k]
      np.testing.assert_allclose(out[k], v, atol=1e-5)


def _oracle(schedule, prediction, x0):
  """The network that knows x₀: its output at (x_t, t) is the true target there."""
  def fn(x_t, t):
    def leaf(x, c):
      a = schedule.sqrt_alphas_cumprod[t].reshape((-1,) + (1,) * (x.ndim - 1))
      s = schedule.sqrt_one_minus_alphas_cumprod[t].reshape(a.shape)
      c = jnp.broadcast_to(c, x.shape)
      eps = (x - a * c) / s
      return {'eps': eps, 'x0': c, 'v': a * eps - s * c}[prediction]
    return jax.tree.map(leaf, x_t, x0)
  return fn


@pytest.mark.parametrize('name', SCHEDULES)
@pytest.mark.parametrize('prediction', diffusion.PREDICTIONS)
def test_ddim_with_an_oracle_recovers_x0_from_any_noisy_input(name, prediction):
  schedule = SCHEDULES[name]
  x0 = {'layout': RNG.uniform(-3, 3, (7,)).astype(np.float32),
        'pose': RNG.uniform(-3, 3, (3, 7)).astype(np.float32)}
  template = {k: jax.ShapeDtypeStruct((8,) + v.shape, jnp.float32) for k, v in x0.items()}
  fn = _oracle(schedule, prediction, x0)
  # ε's x̂₀ divides float32 rounding by √ᾱ_t (down to 0.006, linear, or 5e-5, cosine); x₀
  # and v divide by nothing at the top of the chain.
  atol = {'eps': 1e-3 if name == 'linear' else 1e-2, 'x0': 2e-5, 'v': 2e-5}[prediction]
  for steps in (1, 7, 25):
    out = jax.jit(lambda key: diffusion.ddim_sample(fn, schedule, key, template, steps, eta=0.0,
                                                    prediction=prediction))(jax.random.key(steps))
    for k in x0:
      np.testing.assert_allclose(out[k], np.broadcast_to(x0[k], out[k].shape), atol=atol)
  # One step from an arbitrary x_t at any t lands on x₀ when it goes to t_prev = −1.
  x_t = {k: RNG.normal(size=(8,) + v.shape).astype(np.float32) * 5 for k, v in x0.items()}
  for t in (0, 250, 700, T - 1):
    step = diffusion.ddim_step(fn, schedule, x_t, t, -1, jax.random.key(0), prediction=prediction)
    for k in x0:
      np.testing.assert_allclose(step[k], np.broadcast_to(x0[k], step[k].shape), atol=5 * atol)


def test_ddpm_sampler_takes_every_prediction():
  schedule = diffusion.linear_schedule(50, 1e-3, 0.2)
  x0 = {'pose': RNG.uniform(-2, 2, (3, 7)).astype(np.float32)}
  template = {'pose': jax.ShapeDtypeStruct((4, 3, 7), jnp.float32)}
  outs = [jax.jit(lambda key, p=p: diffusion.ddpm_sample(_oracle(schedule, p, x0), schedule, key,
                                                        template, prediction=p))(jax.random.key(0))
          for p in diffusion.PREDICTIONS]
  for out in outs:  # the same draws, the same oracle: the same chain whatever is predicted
    np.testing.assert_allclose(out['pose'], outs[0]['pose'], atol=1e-4)
    np.testing.assert_allclose(out['pose'], np.broadcast_to(x0['pose'], (4, 3, 7)), atol=1e-3)


def test_weighting_known_values():
  snr = jnp.asarray([1e-3, 0.5, 1.0, 3.0, 5.0, 100.0])
  np.testing.assert_allclose(weighting.x0_weight(snr, 'min_snr', 5.0), [1e-3, 0.5, 1, 3, 5, 5],
                             rtol=1e-6)
  np.testing.assert_allclose(weighting.x0_weight(snr, 'clamped_snr', 5.0), [1, 1, 1, 3, 5, 5],
                             rtol=1e-6)
  with pytest.raises(ValueError, match='clamped_snr'):
    weighting.x0_weight(snr, 'snr', 5.0)
  schedule = SCHEDULES['linear']
  t = jnp.asarray([0, 100, 259, 500, 999])
  s = np.asarray(schedule.snr)[np.asarray(t)]
  w = np.clip(s, 1, 5)
  for prediction, own in (('eps', s), ('x0', np.ones_like(s)), ('v', 1 + s)):
    np.testing.assert_allclose(diffusion.loss_weights(schedule, t, prediction, 'clamped_snr', 5.0),
                               w / own, rtol=1e-5)
    np.testing.assert_array_equal(diffusion.loss_weights(schedule, t, prediction), np.ones(5))
  # ε-MSE is SNR times the x₀-MSE of the same output: the identity the weights stand on.
  x0, eps, out = _tree(5), _tree(5), _tree(5)
  x_t = schedule.add_noise(x0, t, eps)
  x0_hat = diffusion.predict_x0(schedule, 'eps', x_t, t, out)
  for k in ('layout', 'pose'):
    eps_mse = np.mean(np.square(out[k] - eps[k]).reshape(5, -1), 1)
    x0_mse = np.mean(np.square(np.asarray(x0_hat[k], np.float64) - x0[k]).reshape(5, -1), 1)
    np.testing.assert_allclose(eps_mse, s * x0_mse, rtol=2e-3)


def _batch(x0, n):
  b = x0['layout'].shape[0]
  return {'mask': np.arange(n)[None].repeat(b, 0) < np.array([[3], [2], [1], [3], [2], [3]])[:b],
          'layout_mask': np.ones(b, bool), 'has_shape': np.ones((b, n), bool)}


@pytest.mark.parametrize('prediction', diffusion.PREDICTIONS)
def test_clamped_weighting_at_the_top_timestep_is_the_regression_loss(prediction):
  """At t = T − 1 (SNR ≈ 4e-5, clamped to 1) the weighted loss of any output equals the
  regression loss (x₀-MSE, unweighted) of the x̂₀ that output stands for."""
  schedule = SCHEDULES['linear']
  x0, eps, out = _tree(), _tree(), _tree()
  t = jnp.full((6,), T - 1, jnp.int32)
  x_t = schedule.add_noise(x0, t, eps)
  batch = _batch(x0, 3)
  weights = diffusion.loss_weights(schedule, t, prediction, 'clamped_snr', 5.0)
  diffusion_loss = losses.denoising_losses(out, diffusion.target(schedule, prediction, x0, eps, t),
                                           batch, weights)
  x0_hat = diffusion.predict_x0(schedule, prediction, x_t, t, out)
  regression_loss = losses.denoising_losses(x0_hat, x0, batch)
  # ε's x̂₀ divides by √ᾱ = 0.006: float32 keeps 3 digits of it.
  np.testing.assert_allclose(diffusion_loss, regression_loss,
                             rtol=1e-3 if prediction == 'eps' else 1e-5)
  # Where SNR is above γ, the weight is γ, not 1: the clamp has both ends.
  t0 = jnp.zeros((6,), jnp.int32)
  np.testing.assert_allclose(diffusion.loss_weights(schedule, t0, 'x0', 'clamped_snr', 5.0), 5.0)


def test_per_part_latent_normalisation_round_trips_with_unit_spread():
  # Parts with their own offsets and spreads, as the autoencoder's parts have.
  offsets, spreads = RNG.normal(0, 3, (16, 8)), np.exp(RNG.normal(0, 1, (16, 8)))
  latents = (offsets + spreads * RNG.normal(size=(600, 16, 8))).astype(np.float32)
  part = scene_data.latent_statistics(latents, 'part')
  normalised = part.normalize(latents.astype(np.float64))
  np.testing.assert_allclose(part.denormalize(normalised), latents, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(normalised.std(0), 1.0, rtol=0.05)
  np.testing.assert_allclose(normalised.mean(0), 0.0, atol=0.05)
  # Pooled over parts, the per-part spread is not 1: what the per-part statistics fix.
  channel = scene_data.latent_statistics(latents, 'channel')
  assert channel.mean.shape == (8,) and part.mean.shape == (16, 8)
  pooled = channel.normalize(latents.astype(np.float64)).std(0)
  assert np.mean(np.abs(pooled - 1) > 0.05) > 0.5
  with pytest.raises(ValueError, match='part'):
    scene_data.latent_statistics(latents, 'object')


@pytest.mark.parametrize('prediction,schedule', [('x0', 'linear'),  # ε: test_predict's bundles
                                                 ('v', 'cosine')])
def test_every_prediction_exports_and_the_bundle_samples_as_in_process(prediction, schedule,
                                                                      fresh, tmp_path):
  from scenediff_jax.benchmark import sampling as sampling_benchmark
  from scenediff_jax.inference import bundle, export, trained_model
  config, statistics, scene_params, shape_params = fresh
  config = config.copy_and_resolve_references()
  config.diffusion.update(prediction=prediction, schedule=schedule, guidance_scale=1.5)
  path = export.write_bundle(str(tmp_path / 'export'), config, statistics, scene_params,
                             shape_params, platforms=(PLATFORM,))
  loaded = trained_model.load(path)
  metadata = bundle.read_metadata(path, ())  # informative fields: not checked at load
  assert (metadata['prediction'], metadata['schedule'], metadata['method']) == (
      prediction, schedule, 'diffusion')
  in_process = trained_model.from_parameters(config, statistics, scene_params, shape_params)
  inputs = sampling_benchmark.scene_inputs(loaded, objects=3)
  for guidance in (1.0, 2.0):
    a = loaded.sample_scene(inputs, 3, 4, guidance)
    b = in_process.sample_scene(inputs, 3, 4, guidance)
    for k in ('boxes', 'layout', 'gaussians', 'intrinsics'):
      assert np.isfinite(a[k]).all()
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_workdirs_trained_before_the_recipe_was_a_choice_read_as_the_papers():
  import ml_collections

  from scenediff_jax.training import workdir as workdir_lib
  old = {'diffusion': {'num_timesteps': 1000}, 'training': {'statistics_scenes': 10}}
  new = lambda **d: {'diffusion': {'num_timesteps': 1000, 'prediction': 'eps',
                                   'schedule': 'linear', 'loss_weighting': 'none', **d},
                     'training': {'statistics_scenes': 10, 'latent_normalization': 'channel'}}
  assert workdir_lib.model_and_data_differences(new(), old) == []
  assert workdir_lib.model_and_data_differences(new(prediction='x0'), old) == [
      'diffusion.prediction: eps → x0']
  assert workdir_lib.model_and_data_differences(new(schedule='cosine'), old) == [
      'diffusion.schedule: linear → cosine']
  old_config = ml_collections.ConfigDict(old)
  assert diffusion.prediction_of(old_config) == 'eps'
  linear = ml_collections.ConfigDict(
      {'diffusion': {'num_timesteps': 1000, 'beta_start': 1e-4, 'beta_end': 0.02}})
  assert diffusion.make_schedule(linear).snr.shape == (T,)


def test_per_part_statistics_are_stored_and_read_back(scenes):
  ids = np.unique(np.concatenate([s['objects']['shape_id'] for s in scenes]))
  latents = ShapeLatents(ids.astype(np.int32),
                         RNG.normal(size=(len(ids), 4, 16)).astype(np.float32),
                         RNG.normal(size=(len(ids), 4, 6)).astype(np.float32),
                                    np.ones(len(ids), bool))
  for normalization in ('channel', 'part'):
    statistics = scene_data.compute_scene_statistics(scenes[:16], 16, latents, normalization)
    assert statistics.latent_normalization == normalization
    back = SceneStatistics.from_json(statistics.to_json())
    assert back.latent_normalization == normalization
    np.testing.assert_array_equal(back.gaussians.scale, statistics.gaussians.scale)
    # The same normalised code decodes to the same latent whichever way it was stored.
    example = scene_data.prepare_scene(scenes[0], back, latents, 16, 8, np.random.default_rng(0))
    has = example['has_shape']
    rows = latents.rows(scenes[0]['objects']['shape_id'])
    np.testing.assert_allclose(back.gaussians.denormalize(example['gaussians'][has].astype(np.float64)),
                               latents.gaussians[rows[rows >= 0]], atol=1e-5)
