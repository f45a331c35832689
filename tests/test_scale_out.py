"""Scaling out (issue 7): meshes from the config, fsdp-style sharding of the large arrays,
per-process input, preemption-safe training and damaged-checkpoint fallback. Several devices
are simulated on the CPU in subprocesses (`--xla_force_host_platform_device_count`)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_scene_training import _batch, prepared, tiny_config  # noqa: F401 (a fixture)

from scenediff_jax.training import checkpoints, distributed, scene_data, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mesh_specs_and_their_errors():
  mesh = sharding.make_mesh((('data', -1),))
  assert mesh.axis_names == ('data',) and mesh.shape['data'] == jax.device_count()
  assert sharding.make_mesh([['data', 1], ['model', 1]]).axis_names == ('data', 'model')
  for bad in ((('model', -1),), (('data', -1), ('model', -1)), (('data', 3),),
              (('data', 1), ('data', 1))):
    with pytest.raises(ValueError, match='config.mesh'):
      sharding.make_mesh(bad)


def test_several_processes_are_read_from_the_environment():
  assert not distributed.several_processes({})
  assert not distributed.several_processes({'SLURM_NTASKS': '1'})
  assert distributed.several_processes({'SLURM_NTASKS': '4'})
  assert distributed.several_processes({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'})
  assert distributed.several_processes({'TPU_WORKER_HOSTNAMES': 'a,b'})
  assert not distributed.several_processes({'TPU_WORKER_HOSTNAMES': 'a'})


def test_each_process_reads_only_its_block_of_every_global_batch(scenes, prepared):
  latents, statistics = prepared
  config = tiny_config()
  config.training.batch_size = 4
  source = scenes[:16]
  whole = scene_data.training_batches(source, statistics, latents, config, 0, 1)
  halves = [scene_data.training_batches(source, statistics, latents, config, p, 2)
            for p in range(2)]
  for step in (0, 3, 7):
    joined = {k: np.concatenate([h[step][k] for h in halves]) for k in whole[step]}
    assert halves[0][step]['image'].shape[0] == 2
    for k in whole[step]:
      np.testing.assert_array_equal(joined[k], whole[step][k])
  with pytest.raises(ValueError, match='multiple of the 3 processes'):
    scene_data.training_batches(source, statistics, latents, config, 0, 3)


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  directory = tmp_path / 'ckpt'
  writer = checkpoints.Checkpointer(directory)
  values = {step: np.random.default_rng(step).normal(size=(64, 64)).astype(np.float32)
            for step in (1, 2)}
  for step in (1, 2):
    writer.save(step, {'w': values[step]})
  writer.close()
  files = [os.path.join(d, f) for d, _, names in os.walk(directory / '2' / 'default')
           for f in names]
  biggest = max(files, key=os.path.getsize)  # the array data
  with open(biggest, 'r+b') as f:  # a half-written file
    f.truncate(os.path.getsize(biggest) // 2)
  abstract = {'w': jax.ShapeDtypeStruct((64, 64), np.float32)}
  # Read only (eval, export, predict): refused, nothing moved or deleted.
  read_only = checkpoints.Checkpointer(directory, read_only=True)
  with pytest.raises(checkpoints.CheckpointUnreadable, match='Checkpoint 2'):
    read_only.restore(abstract)
  read_only.close()
  assert sorted(os.listdir(directory)) == ['1', '2']
  reader = checkpoints.Checkpointer(directory)
  with caplog.at_level('WARNING'):
    restored = reader.restore(abstract)
  np.testing.assert_array_equal(restored['w'], values[1])
  assert 'Checkpoint 2' in caplog.text and 'resuming from checkpoint 1' in caplog.text
  assert reader.latest_step == 1  # out of the way: training writes step 2 again...
  aside = os.listdir(f'{directory}.unreadable')  # ...and the damaged one is kept
  assert len(aside) == 1 and aside[0].startswith('2-')
  reader.close()


_MESHES = '''
import jax, numpy as np, pickle, sys
from scenediff_jax import diffusion
from scenediff_jax.models import scene_model
from scenediff_jax.training import scene_trainer, sharding
sharding.MIN_SHARDED_SIZE = 1024  # the tiny model's kernels count as large here
config, batch, statistics = pickle.load(open(sys.argv[1], 'rb'))
model = scene_model.make_model(config)
assert jax.device_count() == 8
results = {}
for axes in ((('data', -1),), (('data', 1),), (('data', 4), ('model', 2))):
  devices = jax.devices() if axes[0][1] != 1 else jax.devices()[:1]
  mesh = sharding.make_mesh(axes, devices)
  with jax.set_mesh(mesh):
    b = scene_trainer.device_batch(batch, mesh)
    state = scene_trainer.initial_state(config, model, b, mesh)
    step = scene_trainer.make_train_step(model, diffusion.make_schedule(config), statistics,
                                         config, mesh)
    losses = []
    for i in range(3):
      state, metrics = step(state, b, jax.random.key(i), True)
      losses.append(float(metrics['loss']))
    specs = [x.sharding.spec for x in jax.tree.leaves(state.params)]
    sharded = sum('model' in tuple(s) for s in specs)
    big = sum(x.size >= sharding.MIN_SHARDED_SIZE and any(d % 2 == 0 for d in x.shape)
              for x in jax.tree.leaves(state.params))
    results[axes] = (np.array(losses), jax.tree.map(np.asarray, state.params),
                     len(b['image'].sharding.device_set), sharded, big)
(l8, p8, n8, _, _), (l1, p1, n1, _, _), (l42, p42, n42, sharded, big) = results.values()
assert (n8, n1, n42) == (8, 1, 8), (n8, n1, n42)
assert big > 0 and sharded == big, (sharded, big)
flat = lambda p: np.concatenate([x.ravel() for x in jax.tree.leaves(p)]).astype(np.float64)
for losses, params in ((l8, p8), (l42, p42)):
  np.testing.assert_allclose(losses, l1, rtol=1e-5)
  # Relative to all parameters together: Adam turns rounding noise in gradients that are
  # zero in exact arithmetic (biases before a normalisation) into tiny but unequal steps.
  error = np.linalg.norm(flat(params) - flat(p1)) / np.linalg.norm(flat(p1))
  assert error < 1e-5, error
print('OK', sharded, 'of', len(jax.tree.leaves(p1)), 'parameter arrays sharded')
'''


@pytest.mark.slow
def test_eight_devices_train_like_one_and_a_model_axis_shards_the_large_kernels(
    scenes, prepared, tmp_path):
  latents, statistics = prepared
  config = tiny_config()
  config.training.batch_size = 8
  path = tmp_path / 'inputs.pkl'
  path.write_bytes(pickle.dumps((config, _batch(scenes, prepared, list(range(8)), config),
                                 statistics)))
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}
  result = subprocess.run([sys.executable, '-c', _MESHES, str(path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


_TRAIN = '''
import pickle, sys, time
import numpy as np, jax
from scenediff_jax.training import preemption, scene_data, scene_trainer
config, source, latents, statistics = pickle.load(open(sys.argv[1], 'rb'))
workdir = sys.argv[2]
slow = scene_data.prefetched
def paced(batches, start, **kwargs):  # a few steps per second, so a signal lands mid-run
  for batch in slow(batches, start, **kwargs):
    time.sleep(0.1)
    yield batch
scene_data.prefetched = paced
try:
  _, state = scene_trainer.train(config, workdir, source, statistics, latents)
except preemption.Preempted as stop:
  print('PREEMPTED', stop)
  sys.exit(0)
np.savez(workdir + '/final.npz', *[np.asarray(x) for x in jax.tree.leaves(state.params)])
print('DONE', int(state.step))
'''


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_to_the_uninterrupted_result(scenes, prepared, tmp_path):
  latents, statistics = prepared
  config = tiny_config()
  config.training.update(diffusion_steps=24, joint_steps=6, log_every=2, checkpoint_every=8,
                         keep_checkpoints=3)
  path = tmp_path / 'inputs.pkl'
  path.write_bytes(pickle.dumps((config, scenes[:16], latents, statistics)))
  command = lambda work: [sys.executable, '-c', _TRAIN, str(path), str(work)]
  env = dict(os.environ)  # with conftest's shared compilation cache: compiled once
  run = lambda work: subprocess.run(command(work), cwd=REPO, capture_output=True, text=True,
                                    timeout=600, env=env)

  def interrupted(work, sig, after_step):
    """Starts a run, sends `sig` once it logged `after_step`; returns the process' output."""
    process = subprocess.Popen(command(work), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    log = work / 'logs' / 'metrics.jsonl'
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
      if log.exists() and len(log.read_text().splitlines()) * 2 >= after_step:
        process.send_signal(sig)
        break
      time.sleep(0.05)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err

  reference = run(tmp_path / 'straight')
  assert 'DONE 30' in reference.stdout, reference.stderr[-3000:]
  expected = np.load(tmp_path / 'straight' / 'final.npz')

  for sig, after in ((signal.SIGTERM, 12), (signal.SIGKILL, 18)):
    work = tmp_path / sig.name
    code, out, err = interrupted(work, sig, after)
    saved = sorted(int(s) for s in os.listdir(work / 'checkpoints' / 'scene') if s.isdigit())
    if sig == signal.SIGTERM:  # a clean stop with a checkpoint of the step it stopped at
      assert code == 0 and 'PREEMPTED' in out, err[-3000:]
      assert saved[-1] >= after and saved[-1] % 8, saved
    else:  # killed: the last complete checkpoint is a multiple of checkpoint_every
      assert code == -signal.SIGKILL and saved[-1] % 8 == 0, (code, saved)
    resumed = run(work)
    assert 'DONE 30' in resumed.stdout, resumed.stderr[-3000:]
    assert f'{saved[-1]}/30 [' in resumed.stderr  # the progress bar starts where it stopped
    final = np.load(work / 'final.npz')
    for name in expected.files:
      np.testing.assert_array_equal(final[name], expected[name])


def test_main_exits_75_after_a_preemption_checkpoint(tmp_path, monkeypatch):
  import ml_collections

  from scenediff_jax import main
  from scenediff_jax.training import pipeline, preemption

  def preempted(config, workdir):
    raise preemption.Preempted('Preempted after step 3')

  monkeypatch.setattr(pipeline, 'train', preempted)
  with pytest.raises(SystemExit) as stop:
    config = ml_collections.ConfigDict({'name': 'test', 'data_dir': str(tmp_path), 'data': {
        'name': 'synth_rooms', 'shape_name': 'synth_shapes', 'size': 'tiny', 'seed': 0}})
    main.run(config, str(tmp_path), 'train')
  assert stop.value.code == 75 == preemption.EXIT_STATUS


_PROCESS = '''
import glob, os, pickle, sys
import numpy as np, jax
from scenediff_jax.models import scene_model
from scenediff_jax.training import checkpoints, distributed, scene_data, scene_trainer, sharding
distributed.initialize()
assert jax.device_count() == 8, jax.device_count()
config, source, latents, statistics = pickle.load(open(sys.argv[1], 'rb'))
job, workdir = sys.argv[2], sys.argv[3]
if job == 'train':
  _, state = scene_trainer.train(config, workdir, source, statistics, latents)
  # What this process holds of the final state, for the other job to check against.
  with open(f'{workdir}/shards_{jax.process_index()}.pkl', 'wb') as f:
    pickle.dump([(i, leaf.shape, shard.index, np.asarray(shard.data))
                 for i, leaf in enumerate(jax.tree.leaves(state))
                 for shard in leaf.addressable_shards], f)
else:  # restore the other job's last checkpoint: each process checks its own shards
  model = scene_model.make_model(config)
  mesh = sharding.make_mesh((('data', -1),))
  with jax.set_mesh(mesh):
    batch = scene_data.training_batches(source, statistics, latents, config)[0]
    checkpointer = checkpoints.Checkpointer(workdir + '/checkpoints/scene')
    state = scene_trainer.restore_state(checkpointer, config, model,
                                        scene_trainer.device_batch(batch, mesh), mesh)
    checkpointer.close()
  saved = [piece for path in glob.glob(f'{workdir}/shards_*.pkl')
           for piece in pickle.load(open(path, 'rb'))]
  leaves = jax.tree.leaves(state)
  expected = [np.zeros(leaf.shape, leaf.dtype) for leaf in leaves]
  for i, _, index, data in saved:
    expected[i][index] = data
  for leaf, want in zip(leaves, expected):
    for shard in leaf.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), want[shard.index])
print('DONE', jax.process_index(), int(state.step))
'''


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _job(processes, *args, timeout=900):
  """`_PROCESS ARGS` as one process with 8 simulated devices, or as two on localhost with 4
  each (a local coordinator, gloo collectives); returns each process' stdout."""
  base = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COORDINATOR')}
  if processes == 1:
    envs = [{**base, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'}]
  else:
    coordinator = f'localhost:{_free_port()}'
    envs = [{**base, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4',
             'JAX_COORDINATOR_ADDRESS': coordinator, 'JAX_NUM_PROCESSES': '2',
             'JAX_PROCESS_ID': str(p)} for p in range(2)]
  running = [subprocess.Popen([sys.executable, '-c', _PROCESS, *map(str, args)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for env in envs]
  results = [p.communicate(timeout=timeout) for p in running]
  for p, (out, err) in zip(running, results):
    assert p.returncode == 0 and 'DONE' in out, err[-3000:]
  return [out for out, _ in results]


def _final_state(work):
  """The final state's leaves, assembled from what each process of the job held."""
  leaves = {}
  for name in os.listdir(work):
    if name.startswith('shards_'):
      for i, shape, index, data in pickle.loads((work / name).read_bytes()):
        leaves.setdefault(i, np.zeros(shape, data.dtype))[index] = data
  return [leaves[i] for i in range(len(leaves))]


@pytest.mark.slow
def test_two_processes_train_like_one_and_restore_each_others_checkpoints(
    scenes, prepared, tmp_path):
  """Multi-host for real on one machine: two processes of 4 CPU devices each against one
  process of 8, on the same global batches (each process reads its block of each)."""
  latents, statistics = prepared
  config = tiny_config()
  config.training.update(batch_size=8, diffusion_steps=2, joint_steps=2, log_every=1,
                         checkpoint_every=2, keep_checkpoints=3)
  inputs = tmp_path / 'inputs.pkl'
  inputs.write_bytes(pickle.dumps((config, scenes[:16], latents, statistics)))
  one, two = tmp_path / 'one', tmp_path / 'two'
  _job(1, inputs, 'train', one)
  assert [out.split()[-1] for out in _job(2, inputs, 'train', two)] == ['4', '4']

  def losses(work):
    with open(work / 'logs' / 'metrics.jsonl') as f:
      return np.array([[json.loads(line)[k] for k in ('loss', 'l_pose', 'l_shape', 'l_align')]
                       for line in f])
  assert losses(one).shape == (4, 4)  # written once, by process 0
  assert losses(one)[2:, 3].min() > 0  # L_align is on in the joint steps
  np.testing.assert_allclose(losses(two), losses(one), rtol=1e-5, atol=1e-7)
  assert sorted(os.listdir(two / 'checkpoints' / 'scene')) == ['2', '4']
  flat = lambda leaves: np.concatenate([x.ravel() for x in leaves]).astype(np.float64)
  a, b = flat(_final_state(one)), flat(_final_state(two))
  assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-5  # as the meshes test, rounding
  # Each job restores the other's checkpoint, to the very values the other job held.
  _job(1, inputs, 'restore', two)
  _job(2, inputs, 'restore', one)
