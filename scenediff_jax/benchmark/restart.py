"""A restart with the compilation cache warm: a new process creates the train state and runs
one train step, the programs found in the persistent cache that an earlier run filled.

Run by the train-step section (train_step.py) as
  python -m scenediff_jax.benchmark.restart CONFIG_FILE VARIANT COMPUTE_DTYPE CACHE_DIR STAGE
after it compiled the same programs with that cache on; prints one JSON line of seconds.
"""
import json
import sys
import time


def first_step_seconds(config, cache_dir, stage) -> dict:
  """Seconds to a fresh state and to the end of its first train step (one process, the
  cache at `cache_dir`), and whether its programs came from the cache."""
  start = time.perf_counter()
  import jax  # pylint: disable=import-outside-toplevel

  from scenediff_jax import compiler, diffusion, executable_cache  # pylint: disable=import-outside-toplevel
  from scenediff_jax.benchmark import train_step  # pylint: disable=import-outside-toplevel
  from scenediff_jax.models.scene_model import make_model  # pylint: disable=import-outside-toplevel
  from scenediff_jax.training import scene_trainer, sharding  # pylint: disable=import-outside-toplevel
  compiler.use_persistent_cache(cache_dir)
  imported = time.perf_counter()
  model, schedule = make_model(config), diffusion.make_schedule(config)
  mesh = sharding.make_mesh()
  with jax.set_mesh(mesh):
    batch = scene_trainer.device_batch(train_step.random_batch(config, config.training.batch_size),
                                       mesh)
    state = jax.block_until_ready(scene_trainer.initial_state(config, model, batch, mesh))
    initialised = time.perf_counter()
    step = scene_trainer.make_train_step(model, schedule, train_step.plausible_statistics(config),
                                         config)
    # As the trainer gets it: the executable cache's file (no tracing), else tracing,
    # lowering and the persistent cache's executable (or a compilation, on a miss).
    compiled = step.compile(state, batch, jax.random.key(1), stage == 'joint')
    ready = time.perf_counter()
    state, metrics = compiled(state, batch, jax.random.key(1))
    jax.block_until_ready(metrics)
  done = time.perf_counter()
  return {'import_seconds': imported - start,
          'init_seconds': initialised - imported,  # init's programs from the cache, and run
          'step_compile_seconds': ready - initialised,  # executable load, or trace + lower + cache
          'executables_loaded': executable_cache.loaded(),
          'first_step_seconds': done - ready,  # running it (the first run of a program)
          'restart_seconds': done - imported}  # after the imports: init + the first step


def main(argv):
  config_file, variant, dtype, cache_dir, stage = argv[1:]
  from scenediff_jax import config_files  # pylint: disable=import-outside-toplevel
  config = config_files.load(config_file).get_config(variant)
  config.training.compute_dtype = dtype
  print(json.dumps(first_step_seconds(config, cache_dir, stage)))


if __name__ == '__main__':
  main(sys.argv)
