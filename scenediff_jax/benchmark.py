"""Benchmarks: `python -m scenediff_jax.benchmark [--quick] [--out FILE.json]`.

Measured side by side in one run, medians over repeats after a warm-up. Sections:
  synth_rooms  scene generation (furnish + camera + render) at 256×192, one process and
               the builder's process pool
"""
import functools
import json
import os
import platform
import statistics
import time

from absl import app, flags, logging

_QUICK = flags.DEFINE_bool('quick', False, 'Fewer repeats, for a fast look.')
_OUT = flags.DEFINE_string('out', None, 'Also write the results to this JSON file.')


def _median_seconds(fn, repeats):
  fn()  # warm-up: imports, caches
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_synth_rooms(quick: bool) -> dict:
  from data_pipelines.synth_rooms import builder
  from data_pipelines.synth_rooms.scene import generate_scene

  config = builder.builder_config('default').scene
  bank = config.bank()
  n, repeats = (8, 3) if quick else (32, 5)
  counter = iter(range(10**9))

  def one_process():
    for _ in range(n):
      generate_scene(config, 'train', next(counter), bank)

  generate = functools.partial(generate_scene, config, 'train')
  with builder.worker_pool() as pool:
    workers = len(pool._pool)
    pool.map(generate, range(10**6, 10**6 + 2 * workers))  # start the workers

    def in_pool():
      start = next(counter) * 1000
      pool.map(generate, range(start, start + 2 * n), chunksize=4)

    pooled = _median_seconds(in_pool, repeats)
  single = _median_seconds(one_process, repeats)
  return {
      'scenes_per_second_one_process': n / single,
      'scenes_per_second_pool': 2 * n / pooled,
      'pool_workers': workers,
      'image_size': [config.width, config.height],
  }


def main(argv):
  del argv
  results = {
      'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                  'cpu_count': os.cpu_count()},
      'synth_rooms': bench_synth_rooms(_QUICK.value),
  }
  text = json.dumps(results, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text + '\n')
    logging.info('Wrote %s', _OUT.value)


if __name__ == '__main__':
  app.run(main)
