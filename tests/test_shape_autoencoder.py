"""The shape autoencoder: invariances, valid parts, a model that can fit shapes, and the
train_shape mode end to end."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial import cKDTree

from data_pipelines.synth_rooms import shape_bank
from scenediff_jax.geometry import gmm
from scenediff_jax.inference import mesh as mesh_lib
from scenediff_jax.models.shape_autoencoder import ShapeAutoencoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(code_size=32, num_parts=4, intrinsic_size=8, width=32, num_heads=2, decoder_depth=1)


@pytest.fixture(scope='module')
def tiny():
  model = ShapeAutoencoder(**TINY)
  params = model.init(jax.random.key(0), jnp.zeros((1, 64, 3)), jnp.zeros((1, 10, 3)))
  return model, params


def test_encoder_is_permutation_invariant(tiny):
  model, params = tiny
  points = jax.random.uniform(jax.random.key(1), (2, 256, 3), minval=-0.5, maxval=0.5)
  permuted = points[:, jax.random.permutation(jax.random.key(2), 256)]
  a = model.apply(params, points, method=ShapeAutoencoder.encode)
  b = model.apply(params, permuted, method=ShapeAutoencoder.encode)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=1e-5)
  other = model.apply(params, points * 0.5, method=ShapeAutoencoder.encode)
  assert not np.allclose(a[0], other[0], atol=1e-3)  # but it does see the points


def test_parts_are_valid_gaussians(tiny):
  model, params = tiny
  points = jax.random.uniform(jax.random.key(3), (3, 128, 3), minval=-0.5, maxval=0.5)
  gaussians, intrinsics = model.apply(params, points, method=ShapeAutoencoder.encode)
  assert gaussians.shape == (3, 4, gmm.GAUSSIAN_SIZE) and intrinsics.shape == (3, 4, 8)
  mean, basis, variances, _ = gmm.split(gaussians)
  np.testing.assert_allclose(basis @ jnp.swapaxes(basis, -1, -2),
                             np.broadcast_to(np.eye(3), basis.shape), atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.det(basis), 1.0, atol=1e-5)
  assert np.all(variances > 0) and np.all(np.abs(mean) <= 0.5)
  np.testing.assert_allclose(gmm.project(gaussians), gaussians, atol=1e-6)


def test_decoder_jits_for_any_query_count_and_queries_are_independent(tiny):
  model, params = tiny
  points = jax.random.uniform(jax.random.key(4), (1, 128, 3), minval=-0.5, maxval=0.5)
  g, i = model.apply(params, points, method=ShapeAutoencoder.encode)
  decode = jax.jit(lambda q: model.apply(params, g, i, q, method=ShapeAutoencoder.occupancy))
  queries = jax.random.uniform(jax.random.key(5), (1, 100, 3), minval=-0.6, maxval=0.6)
  full = decode(queries)
  assert full.shape == (1, 100)
  np.testing.assert_allclose(decode(queries[:, :7]), full[:, :7], atol=1e-5)
  np.testing.assert_allclose(decode(queries[:, ::-1]), full[:, ::-1], atol=1e-5)


def _shape_batch(count=4, surface=512, queries=1024):
  bank = shape_bank.ShapeBank(0, 4, 2)
  rng = np.random.default_rng(0)
  ids = bank.all_ids('train')[::10][:count]
  s, q, inside = [], [], []
  for shape_id in ids:
    shape = bank.shape(int(shape_id))
    s.append(shape_bank.surface_samples(shape, surface, rng)[0])
    points, labels = shape_bank.occupancy_samples(shape, queries, rng)
    q.append(points)
    inside.append(labels)
  return bank, ids, {'surface': jnp.asarray(np.stack(s)), 'queries': jnp.asarray(np.stack(q)),
                     'inside': jnp.asarray(np.stack(inside), jnp.float32)}


@pytest.fixture(scope='module')
def overfitted():
  """A tiny model trained briefly on four shapes (no augmentation)."""
  model = ShapeAutoencoder(code_size=64, num_parts=8, intrinsic_size=16, width=64, num_heads=4,
                           decoder_depth=2)
  bank, ids, batch = _shape_batch()
  params = model.init(jax.random.key(0), batch['surface'], batch['queries'])
  tx = optax.adam(2e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss(p):
      logits, _, _ = model.apply(p, batch['surface'], batch['queries'])
      return optax.sigmoid_binary_cross_entropy(logits, batch['inside']).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, value

  for _ in range(300):
    params, opt_state, _ = step(params, opt_state)
  return model, params, bank, ids, batch


def test_balanced_bce_gives_inside_and_outside_half_the_weight_each():
  from scenediff_jax.training.shape_trainer import occupancy_bce
  inside = np.zeros((2, 10), np.float32)
  inside[:, :2] = 1  # 20% inside
  # Inside queries exactly right (loss ~0), outside ones undecided (loss log 2).
  logits = np.where(inside > 0, 30.0, 0.0).astype(np.float32)
  assert float(occupancy_bce(logits, inside)) == pytest.approx(0.8 * np.log(2), rel=1e-4)
  assert float(occupancy_bce(logits, inside, balanced=True)) == pytest.approx(0.5 * np.log(2),
                                                                              rel=1e-4)
  # Undecided everywhere: both weigh one in total, so the two losses agree.
  undecided = np.zeros_like(logits)
  assert float(occupancy_bce(undecided, inside, True)) == pytest.approx(np.log(2), rel=1e-4)


def test_near_surface_share_of_the_training_queries():
  """`shape_training.near_surface_share` of each shape's queries come from its stored
  near-surface samples (surface + N(0, 0.02²)): 95% of those lie within 2σ = 0.04 of the
  surface (a plane's |N(0, σ²)|, slightly less near corners), far more than of the uniform
  ones."""
  from data_pipelines.synth_rooms import furniture
  from scenediff_jax.training.shape_data import _Subsample
  shape = furniture.make_shape('chair', np.random.default_rng(0))
  rng = np.random.default_rng(1)
  surface, _ = shape_bank.surface_samples(shape, 4096, rng)
  queries, inside = shape_bank.occupancy_samples(shape, 8192, rng)
  example = {'surface': {'points': surface}, 'occupancy': {'points': queries, 'inside': inside},
             'class': 1, 'shape_id': 0}
  dense_surface, _ = shape_bank.surface_samples(shape, 200_000, rng)
  tree = cKDTree(dense_surface)
  for share in (0.5, 0.75, 0.9):
    out = _Subsample(512, 1000, share).random_map(example, np.random.default_rng(2))
    from_near = np.isin(out['queries'], queries[4096:]).all(-1)
    assert from_near.sum() == round(share * 1000)
    distance = tree.query(out['queries'])[0]
    assert np.mean(distance[from_near] <= 0.04) > 0.9
    assert np.mean(distance[~from_near] <= 0.04) < 0.5
  # A negative share: any stored query alike, about half from each set.
  out = _Subsample(512, 1000, -1.0).random_map(example, np.random.default_rng(3))
  assert abs(np.isin(out['queries'], queries[4096:]).all(-1).mean() - 0.5) < 0.06


def test_part_distances_are_an_input_the_decoder_reads():
  """With part_distances the query layer reads g more features, log(1 + d²_Mahalanobis) to
  each Gaussian: the logits move with the kernel rows of those features, and those rows
  see what gmm.mahalanobis_sq says (zero where a query sits on a Gaussian's mean)."""
  model = ShapeAutoencoder(**{**TINY, 'part_distances': True})
  surface = jnp.asarray(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 256, 3)), jnp.float32)
  queries = surface[:, :64]
  params = model.init(jax.random.key(0), surface, queries)
  g, i = model.apply(params, surface, method=ShapeAutoencoder.encode)
  kernel = params['params']['decoder']['Dense_2']['kernel']
  plain = ShapeAutoencoder(**TINY).init(jax.random.key(0), surface, queries)
  assert kernel.shape[0] == plain['params']['decoder']['Dense_2']['kernel'].shape[0] + 4
  decode = lambda p, q: model.apply(p, g, i, q, method=ShapeAutoencoder.occupancy)
  bumped = jax.tree.map(lambda x: x, params)
  # Random rows: a constant added to a row shifts every width alike, which LayerNorm removes.
  noise = jax.random.normal(jax.random.key(1), kernel.shape[1:])
  bumped['params']['decoder']['Dense_2']['kernel'] = kernel.at[-4:].add(noise)
  assert not np.allclose(decode(params, queries), decode(bumped, queries), atol=1e-4)
  # At a Gaussian's mean its feature is log(1 + 0) = 0: bumping only its row changes nothing.
  at_mean = g[:, :1, :3]
  only_first = jax.tree.map(lambda x: x, params)
  only_first['params']['decoder']['Dense_2']['kernel'] = kernel.at[-4].add(noise)
  np.testing.assert_allclose(decode(params, at_mean), decode(only_first, at_mean), atol=1e-5)


def test_tiny_model_overfits_a_handful_of_shapes(overfitted):
  model, params, _, _, batch = overfitted
  logits, _, _ = model.apply(params, batch['surface'], batch['queries'])
  predicted, inside = np.asarray(logits) > 0, np.asarray(batch['inside']) > 0.5
  iou = (predicted & inside).sum() / (predicted | inside).sum()
  assert iou > 0.75, iou


def test_coarse_to_fine_matches_dense_on_a_trained_model(overfitted):
  model, params, _, _, batch = overfitted
  g, i = model.apply(params, batch['surface'][:1], method=ShapeAutoencoder.encode)
  decode = jax.jit(
      lambda q: model.apply(params, g, i, q[None], method=ShapeAutoencoder.occupancy)[0])
  dense, dense_stats = mesh_lib.extract_mesh_dense(decode, resolution=64, batch_size=32768)
  fast, fast_stats = mesh_lib.extract_mesh(decode, resolution=64, coarse_resolution=16,
                                           batch_size=32768)
  assert len(dense.faces) > 100
  assert fast_stats['queries'] * 2 < dense_stats['queries']
  # A briefly trained field has specks smaller than a coarse cell floating around the
  # shape, which coarse-to-fine may skip; the shape itself (largest component) must match.
  largest = lambda m: max(m.split(only_watertight=False), key=lambda c: c.area)
  a, b = largest(dense), largest(fast)
  d1 = cKDTree(a.vertices).query(b.vertices)[0]
  d2 = cKDTree(b.vertices).query(a.vertices)[0]
  cell = 1.1 / 64
  assert np.mean(d1 ** 2) + np.mean(d2 ** 2) < (0.05 * cell) ** 2
  assert abs(len(a.vertices) - len(b.vertices)) <= 0.01 * len(a.vertices)


@pytest.mark.slow
def test_train_shape_mode_trains_resumes_and_evaluates(tmp_path):
  args = [sys.executable, '-m', 'scenediff_jax.main', '--config=configs/synthetic.py:smoke',
          f'--config.data_dir={tmp_path / "tfds"}', f'--workdir={tmp_path / "work"}',
          '--mode=train_shape']
  run = lambda *extra: subprocess.run(args + list(extra), cwd=REPO, capture_output=True, text=True,
                                      timeout=900)
  first = run()
  assert first.returncode == 0, first.stderr[-3000:]
  log_file = tmp_path / 'work' / 'logs' / 'shape_metrics.jsonl'
  logs = [json.loads(l) for l in log_file.read_text().splitlines()]
  assert [l['step'] for l in logs] == [5, 10, 15, 20]
  assert all(np.isfinite(l['loss']) for l in logs)
  metrics = json.loads((tmp_path / 'work' / 'eval_shape' / 'metrics.json').read_text())
  assert metrics['num_shapes'] == 4 and metrics['shape_fscore'] is not None
  assert (tmp_path / 'work' / 'eval_shape' / 'reconstructions.png').exists()
  # A longer budget resumes from the last checkpoint instead of starting over.
  second = run('--config.shape_training.steps=30')
  assert second.returncode == 0, second.stderr[-3000:]
  log_file = tmp_path / 'work' / 'logs' / 'shape_metrics.jsonl'
  logs = [json.loads(l) for l in log_file.read_text().splitlines()]
  assert [l['step'] for l in logs][-2:] == [25, 30]
  assert sorted(os.listdir(tmp_path / 'work' / 'checkpoints' / 'shape'))[-1] == '30'
