"""The scene diffusion losses: masking, and L_align against a hand-computed answer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scenediff_jax.geometry import camera, gmm
from scenediff_jax.geometry import pose as pose_lib
from scenediff_jax.geometry.normalization import SceneStatistics, Statistics
from scenediff_jax.training import losses

G, D = 2, 3


def _identity_statistics():
  one = lambda n: Statistics(np.zeros(n), np.ones(n))
  return SceneStatistics(pose=one(7), layout=one(7), gaussians=one(16), intrinsics=one(D))


def _batch(rng, n=3, real=2):
  mask = np.arange(n) < real
  return {'mask': mask[None], 'has_shape': np.array([[True, False, True]])[:, :n],
          'layout': rng.normal(size=(1, 7)).astype(np.float32), 'layout_mask': np.array([True])}


def _tree(rng, n=3):
  return {'layout': rng.normal(size=(1, 7)), 'pose': rng.normal(size=(1, n, 7)),
          'gaussians': rng.normal(size=(1, n, G, 16)), 'intrinsics': rng.normal(size=(1, n, G, D))}


def test_denoising_losses_ignore_padding_and_shapeless_objects():
  rng = np.random.default_rng(0)
  batch, eps, noise = _batch(rng), _tree(rng), _tree(rng)
  l_pose, l_shape = losses.denoising_losses(eps, noise, batch)
  # Known answer: pose over the 2 real objects + layout; shape over object 0 only (object 1
  # has no shape ground truth, object 2 is padding).
  pose_sq = np.concatenate([((eps['pose'] - noise['pose'])[0, :2] ** 2).ravel(),
                            ((eps['layout'] - noise['layout']) ** 2).ravel()])
  shape = (np.mean((eps['gaussians'] - noise['gaussians'])[0, 0] ** 2)
           + np.mean((eps['intrinsics'] - noise['intrinsics'])[0, 0] ** 2))
  assert float(l_pose) == pytest.approx(pose_sq.mean(), rel=1e-5)
  assert float(l_shape) == pytest.approx(shape, rel=1e-5)
  # Garbage in the padded / shapeless slots changes nothing.
  for key in ('pose', 'gaussians', 'intrinsics'):
    eps[key][0, 2] += 100.0
  eps['gaussians'][0, 1] += 100.0
  assert np.allclose(losses.denoising_losses(eps, noise, batch), (l_pose, l_shape), rtol=1e-6)


def test_pose_loss_skips_the_layout_of_scenes_without_one():
  rng = np.random.default_rng(1)
  batch, eps, noise = _batch(rng), _tree(rng), _tree(rng)
  batch['layout_mask'] = np.array([False])  # e.g. Pix3D: no room box
  l_pose, _ = losses.denoising_losses(eps, noise, batch)
  objects_only = ((eps['pose'] - noise['pose'])[0, :2] ** 2).mean()
  assert float(l_pose) == pytest.approx(objects_only, rel=1e-5)
  eps['layout'] += 100.0
  assert float(losses.denoising_losses(eps, noise, batch)[0]) == pytest.approx(float(l_pose))


def _scene(box):
  K = camera.intrinsics(200.0, 63.5, 47.5)
  R = camera.world_to_cam(0.2, -0.05)
  uv, _ = camera.project(box[:3], K, R)
  bbox2d = np.array([uv[0] - 10, uv[1] - 8, uv[0] + 14, uv[1] + 6])  # off-centre on purpose
  size = np.array([128.0, 96.0])
  pose = pose_lib.box_to_pose(box, bbox2d, K, R, size)
  return K, R, bbox2d, size, pose


def test_alignment_loss_matches_a_hand_computed_answer():
  # One object whose x̂₀ shape is two tiny Gaussians at canonical ±0.25 x; its depth points sit
  # at known offsets from where those land in the world, so L_align is their mean squared offset.
  box = np.array([0.4, 0.3, 3.0, 1.0, 0.8, 0.6, 0.7])
  K, R, bbox2d, size, pose = _scene(box)
  means = np.array([[-0.25, 0, 0], [0.25, 0, 0]])
  gaussians = gmm.join(jnp.asarray(means), jnp.broadcast_to(jnp.eye(3), (2, 3, 3)),
                       jnp.full((2, 3), 1e-10), jnp.zeros(2))
  world_means = np.asarray(
      [box[:3] + np.array([[np.cos(0.7), 0, np.sin(0.7)], [0, 1, 0],
                           [-np.sin(0.7), 0, np.cos(0.7)]])
       @ (m * box[3:6]) for m in means])
  offsets = np.array([[0.1, 0, 0], [0, 0.05, 0], [0, 0, -0.02], [0.03, 0.04, 0]])
  depth = np.concatenate([world_means[0] + offsets[:2], world_means[1] + offsets[2:]])
  batch = {'bbox2d': bbox2d[None, None], 'K': K[None], 'world_to_cam': R[None],
           'mask': np.array([[True, False]]),
           'depth_points': np.stack([depth, depth + 5.0])[None],  # the padded one is far away
           'depth_mask': np.array([[[True] * 4, [True] * 4]])}
  batch['bbox2d'] = np.concatenate([batch['bbox2d'], batch['bbox2d']], 1)
  x0 = {'pose': np.stack([pose, pose])[None].astype(np.float32),
        'gaussians': jnp.stack([gaussians, gaussians])[None]}
  value = losses.alignment_loss(jax.random.key(0), x0, batch, _identity_statistics(),
                                jnp.asarray(size), points_per_gaussian=1)
  expected = np.mean(np.sum(offsets ** 2, -1))
  # The Gaussians' spread is floored at gmm.MIN_VARIANCE (σ = 1e-3), so samples scatter by
  # ~1e-3 around the means: a tolerance of ~2·|offset|·σ.
  assert float(value) == pytest.approx(expected, abs=3e-4)
  # Masking out half the depth points of the real object changes the average accordingly.
  batch['depth_mask'][0, 0, 2:] = False
  value = losses.alignment_loss(jax.random.key(0), x0, batch, _identity_statistics(),
                                jnp.asarray(size), points_per_gaussian=1)
  assert float(value) == pytest.approx(np.mean(np.sum(offsets[:2] ** 2, -1)), abs=3e-4)


def test_alignment_loss_is_differentiable_in_pose_and_shape():
  box = np.array([0.0, 0.2, 2.5, 0.8, 0.8, 0.8, 0.0])
  K, R, bbox2d, size, pose = _scene(box)
  rng = np.random.default_rng(1)
  gaussians = gmm.project(jnp.asarray(rng.normal(size=(1, 1, 4, 16)) * 0.1))
  batch = {'bbox2d': bbox2d[None, None], 'K': K[None], 'world_to_cam': R[None],
           'mask': np.array([[True]]), 'depth_points': rng.normal(size=(1, 1, 20, 3)) * 0.3
           + box[:3], 'depth_mask': np.ones((1, 1, 20), bool)}
  grad = jax.grad(lambda x0: losses.alignment_loss(jax.random.key(0), x0, batch,
                                                   _identity_statistics(), jnp.asarray(size), 8))(
      {'pose': jnp.asarray(pose[None, None], jnp.float32), 'gaussians': gaussians})
  assert np.all(np.isfinite(grad['pose'])) and np.abs(grad['pose']).sum() > 0
  assert np.all(np.isfinite(grad['gaussians'])) and np.abs(grad['gaussians']).sum() > 0
