"""The train step with the optimizer's small arrays packed (training/optimizer.py, what
training uses) against AdamW array by array (the layout before), both compiled in one
process and their steps interleaved, so the machine's drift falls on both alike.

  python -m scenediff_jax.benchmark.optimizer_layouts [default|paper] [STEPS] [reverse]

Prints one JSON line: each layout's step compile seconds and seconds per step (median and
every step). `reverse` times the per-array step first in each pair. BENCHMARKS.md, section 6.
"""
import json
import statistics
import sys
import time

import jax

from configs import synthetic
from scenediff_jax import diffusion
from scenediff_jax.benchmark import train_step as bench
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import optimizer, scene_trainer, sharding
from scenediff_jax.training.init_prng import init_key


def _per_array_norm(tree, small=0):
  del small
  return jax.tree.leaves(tree)  # the grad-norm metric as before: one reduction per array


def main(argv):
  size = argv[1] if len(argv) > 1 else 'default'
  steps = int(argv[2]) if len(argv) > 2 else 10
  layouts = [('packed', True), ('per_array', False)]
  if 'reverse' in argv[3:]:
    layouts.reverse()
  config = synthetic.get_config(size)
  model, schedule = make_model(config), diffusion.make_schedule(config)
  statistics_ = bench.plausible_statistics(config)
  mesh = sharding.make_mesh()
  runs, pack = {}, optimizer.pack
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(bench.random_batch(config, config.training.batch_size),
                                       mesh)
    for name, packed in layouts:
      state = scene_trainer.create_state(config, model, batch, init_key(config.training.seed),
                                         packed_moments=packed)
      optimizer.pack = pack if packed else _per_array_norm
      try:
        start = time.perf_counter()
        step = scene_trainer.make_train_step(model, schedule, statistics_, config)
        compiled = step.lower(state, batch, jax.random.key(0), False).compile()
        runs[name] = {'compiled': compiled, 'state': state, 'times': [],
                      'compile_seconds': time.perf_counter() - start}
      finally:
        optimizer.pack = pack
    for i in range(steps + 1):  # the first pair warms up
      for run in runs.values():
        start = time.perf_counter()
        run['state'], metrics = run['compiled'](run['state'], batch, jax.random.key(1))
        jax.block_until_ready(metrics)
        if i:
          run['times'].append(time.perf_counter() - start)
  print(json.dumps({'size': size, 'order': [name for name, _ in layouts], **{
      name: {'compile_seconds': run['compile_seconds'],
             'seconds_per_step': statistics.median(run['times']), 'times': run['times']}
      for name, run in runs.items()}}))


if __name__ == '__main__':
  main(sys.argv)
