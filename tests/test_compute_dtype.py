"""training.compute_dtype: with bfloat16 the matrix products and convolutions run in
bfloat16, while parameters, optimizer state, the model's outputs and the losses stay
float32; a train step's loss stays close to float32's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from scenediff_jax import diffusion
from scenediff_jax.benchmark.train_step import plausible_statistics, random_batch
from scenediff_jax.models import scene_model
from scenediff_jax.training import scene_trainer, sharding

PRODUCTS = ('dot_general', 'conv_general_dilated')


def products(jaxpr, found=None):
  """[input dtype] of every matrix product and convolution in a jaxpr, sub-programs (scan
  bodies, inner jits, custom gradients) included."""
  found = [] if found is None else found
  for eqn in jaxpr.eqns:
    if eqn.primitive.name in PRODUCTS:
      found.append(str(eqn.invars[0].aval.dtype))
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          products(sub.jaxpr, found)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          products(sub, found)
  return found


def smoke(dtype):
  config = synthetic.get_config('smoke')
  config.training.compute_dtype = dtype
  return config


@pytest.fixture(scope='module')
def batch():
  return random_batch(smoke('float32'), batch_size=2, image_size=(64, 64))


def test_bfloat16_products_with_float32_parameters_and_outputs(batch):
  noisy = {k: batch[k] for k in scene_trainer.DIFFUSED}
  t = np.array([10, 900], np.int32)
  found = {}
  for dtype in ('float32', 'bfloat16'):
    model = scene_model.make_model(smoke(dtype))
    params = jax.eval_shape(model.init, jax.random.key(0), batch, noisy, t)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype('float32')}
    jaxpr = jax.make_jaxpr(model.apply)(params, batch, noisy, t)
    outputs = jax.eval_shape(model.apply, params, batch, noisy, t)
    assert {x.dtype for x in jax.tree.leaves(outputs)} == {jnp.dtype('float32')}
    found[dtype] = products(jaxpr.jaxpr)
  assert set(found['float32']) == {'float32'}
  assert len(found['bfloat16']) == len(found['float32']) > 20
  # All but the zero-initialised output heads (float32, so that small outputs keep their
  # precision) and the scene-level embeddings run in bfloat16.
  assert found['bfloat16'].count('bfloat16') >= 0.8 * len(found['bfloat16'])


def test_a_bfloat16_train_step_keeps_float32_state_and_a_close_loss(batch):
  mesh = sharding.make_mesh()
  losses = {}
  with jax.set_mesh(mesh):
    device_batch = scene_trainer.device_batch(batch, mesh)
    for dtype in ('float32', 'bfloat16'):
      config = smoke(dtype)
      model = scene_model.make_model(config)
      state = scene_trainer.initial_state(config, model, device_batch, mesh)
      step = scene_trainer.make_train_step(model, diffusion.make_schedule(config),
                                           plausible_statistics(config), config, mesh)
      state, metrics = step(state, device_batch, jax.random.key(3), True)
      assert {x.dtype for x in jax.tree.leaves((state.params, state.ema_params))} == \
          {jnp.dtype('float32')}
      assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state.opt_state))
      assert all(np.isfinite(float(v)) and jnp.asarray(v).dtype == jnp.float32
                 for v in metrics.values())
      losses[dtype] = {k: float(v) for k, v in metrics.items()}
  for name in ('loss', 'l_pose', 'l_shape', 'l_align'):
    np.testing.assert_allclose(losses['bfloat16'][name], losses['float32'][name], rtol=0.05)
