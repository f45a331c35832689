"""Writes a TFDS split shard by shard, making its examples in a pool of worker processes.

`ShardBasedBuilder`s (every builder here) want one generator per shard; examples are
independent functions of their key, so workers make them in parallel and one progress bar
covers the split. `SCENEDIFF_DATA_WORKERS` sets the number of workers (default: all cores).
"""
import multiprocessing
import os

import tqdm


def shard_generators(make_example, keys, description, shard_size, preload=()):
  """Shard generators (as ShardBasedBuilder wants) that make examples in a process pool.

  Examples are independent functions of their key, so workers render them in parallel;
  one progress bar covers the split.
  """
  keys = list(keys)
  shards = [keys[i:i + shard_size] for i in range(0, len(keys), shard_size)] or [[]]
  progress = tqdm.tqdm(total=len(keys), desc=description, unit=' examples', leave=False)

  def shard_generator(shard_keys, last):
    def generate():
      with worker_pool(preload) as pool:
        for key, example in zip(shard_keys, pool.imap(make_example, shard_keys, chunksize=4)):
          progress.update()
          if example is not None:  # a source example the builder skips (it logs why)
            yield key, example
      if last:
        progress.close()
    return generate

  return [shard_generator(shard, i == len(shards) - 1) for i, shard in enumerate(shards)]


# One BLAS thread per worker: the workers already fill the cores, and the small matrix
# products of rendering and resizing only lose time to thread hand-offs (about 30% on 2 cores).
_SINGLE_THREADED = {'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def worker_pool(preload=()):
  """Worker processes for generation. forkserver: forking a parent that already runs
  threads (TFDS, jax) can deadlock, and spawning re-imports everything for every pool."""
  workers = int(os.environ.get('SCENEDIFF_DATA_WORKERS',
                               os.environ.get('SYNTH_ROOMS_WORKERS', os.cpu_count() or 1)))
  saved = {k: os.environ.get(k) for k in _SINGLE_THREADED}
  os.environ.update(_SINGLE_THREADED)  # inherited by the server and workers started now
  try:
    if 'forkserver' in multiprocessing.get_all_start_methods():
      context = multiprocessing.get_context('forkserver')
      context.set_forkserver_preload(list(preload))
    else:
      context = multiprocessing.get_context('spawn')
    return context.Pool(workers)
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k)
      else:
        os.environ[k] = v
