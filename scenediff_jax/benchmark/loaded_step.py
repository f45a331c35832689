"""Is a loaded executable as fast as the one compiled? The scene train step compiled in this
process, the same step loaded back from its file by another instance (what a restart runs,
executable_cache), and that instance called as the trainer calls it (its lookup per call
included): their steps interleaved in one process, the order rotating, so the machine's
drift falls on all three alike (BENCHMARKS.md, section 6). Prints one JSON line.

  python -m scenediff_jax.benchmark.loaded_step [VARIANT=default] [ROUNDS=10]
"""
import json
import sys
import tempfile
import time

import jax
import numpy as np

from scenediff_jax import compiler, config_files, diffusion, executable_cache
from scenediff_jax.benchmark import train_step
from scenediff_jax.models.scene_model import make_model
from scenediff_jax.training import scene_trainer, sharding


def interleaved(variant, rounds) -> dict:
  compiler.use_persistent_cache(tempfile.mkdtemp(prefix='jax_cache_'))  # fresh: XLA compiles
  config = config_files.load('configs/synthetic.py').get_config(variant)
  model, schedule = make_model(config), diffusion.make_schedule(config)
  statistics = train_step.plausible_statistics(config)
  mesh = sharding.make_mesh()
  make = lambda: scene_trainer.make_train_step(model, schedule, statistics, config)
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(train_step.random_batch(config,
                                                               config.training.batch_size), mesh)
    state = lambda: scene_trainer.initial_state(config, model, batch, mesh)
    first, second = make(), make()
    # A program takes states of the structure it was made for (their optimizer's functions
    # included): each chain of steps starts from the state its program was made with.
    states = {'compiled': state(), 'loaded': state(), 'loaded, as the trainer calls it': state()}
    compiled = first.compile(states['compiled'], batch, jax.random.key(0), False)  # written
    loaded = second.compile(states['loaded'], batch, jax.random.key(0), False)
    assert executable_cache.loaded()[-1] == 'scene_train_step', 'the step was not loaded'
    runs = {'compiled': (lambda s, k: compiled(s, batch, k)),
            'loaded': (lambda s, k: loaded(s, batch, k)),
            'loaded, as the trainer calls it': (lambda s, k: second(s, batch, k, False))}
    seconds = {name: [] for name in runs}
    names = list(runs)
    for i in range(rounds + 1):  # the first round warms every program up; not counted
      for name in names[i % 3:] + names[:i % 3]:
        start = time.perf_counter()
        states[name], metrics = runs[name](states[name], jax.random.key(i))
        jax.block_until_ready(metrics)
        if i:
          seconds[name].append(time.perf_counter() - start)
  medians = {name: float(np.median(s)) for name, s in seconds.items()}
  return {'variant': variant, 'rounds': rounds, 'median_seconds': medians,
          'loaded_over_compiled': medians['loaded'] / medians['compiled'],
          'trainer_call_over_compiled':
              medians['loaded, as the trainer calls it'] / medians['compiled']}


if __name__ == '__main__':
  print(json.dumps(interleaved(sys.argv[1] if len(sys.argv) > 1 else 'default',
                               int(sys.argv[2]) if len(sys.argv) > 2 else 10)))
