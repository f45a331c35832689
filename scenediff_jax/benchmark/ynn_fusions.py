"""What XLA's YNNPACK fusions cost a restart on a CPU: the train step compiled with the
given `xla_cpu_experimental_ynn_fusion_type` (compiler.py passes DOT and REDUCE), its
seconds per step, and the time to trace, lower and compile it (with the cache warm: to load
it). Run it twice per setting with the same cache directory, the first time with STEPS > 0
(cold compile, timed steps), the second with 0 (a restart):

  for types in LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE LIBRARY_FUSION_TYPE_DOT ''; do
    for steps in 10 0; do
      python -m scenediff_jax.benchmark.ynn_fusions default diffusion "$types" $steps /tmp/ynn
    done
  done

Prints one JSON line. BENCHMARKS.md, section 6.
"""
import json
import sys
import time

import jax

from scenediff_jax import compiler


def main(argv):
  size, stage, types, steps, cache = argv[1], argv[2], argv[3], int(argv[4]), argv[5]
  compiler.CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': types}
  compiler.use_persistent_cache(f'{cache}/{size}_{stage}_{types.replace(",", "_") or "none"}')
  # pylint: disable=import-outside-toplevel
  from configs import synthetic
  from scenediff_jax import diffusion
  from scenediff_jax.benchmark import timing, train_step
  from scenediff_jax.models.scene_model import make_model
  from scenediff_jax.training import scene_trainer, sharding
  config = synthetic.get_config(size)
  model, schedule = make_model(config), diffusion.make_schedule(config)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(
        train_step.random_batch(config, config.training.batch_size), mesh)
    start = time.perf_counter()
    state = jax.block_until_ready(scene_trainer.initial_state(config, model, batch, mesh))
    initialised = time.perf_counter()
    step = scene_trainer.make_train_step(model, schedule, train_step.plausible_statistics(config),
                                         config)
    lowered = step.lower(state, batch, jax.random.key(0), stage == 'joint')
    traced = time.perf_counter()
    compiled = lowered.compile()
    ready = time.perf_counter()
    holder = {'state': state}

    def run():
      holder['state'], metrics = compiled(holder['state'], batch, jax.random.key(1))
      jax.block_until_ready(metrics)

    seconds = timing.median_seconds(run, steps) if steps else None
  print(json.dumps({'size': size, 'stage': stage, 'ynn_fusion_types': types,
                    'ynn_fusions': compiled.as_text().count('__ynn'),
                    'init_seconds': initialised - start,
                    'trace_lower_seconds': traced - initialised,
                    'compile_or_load_seconds': ready - traced, 'seconds_per_step': seconds}))


if __name__ == '__main__':
  main(sys.argv)
