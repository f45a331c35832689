"""Several processes, one JAX runtime: a TPU pod slice, a multi-node SLURM job, or any launch
that sets JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID). They join
before anything touches a device; afterwards only process 0 logs at INFO level."""
import os

from absl import logging
import jax


def several_processes(env=os.environ) -> bool:
  return ('JAX_COORDINATOR_ADDRESS' in env or int(env.get('SLURM_NTASKS', '1')) > 1 or
          ',' in env.get('TPU_WORKER_HOSTNAMES', ''))


def initialize() -> None:
  if several_processes():
    if not os.environ.get('JAX_CPU_COLLECTIVES_IMPLEMENTATION'):
      # CPU devices of several processes talk through gloo (no effect on GPUs and TPUs).
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    # JAX reads JAX_COORDINATOR_ADDRESS itself but not the count and id: those come from
    # here, or from the cluster's own detection (SLURM, TPU) when they are not set.
    count, index = os.environ.get('JAX_NUM_PROCESSES'), os.environ.get('JAX_PROCESS_ID')
    jax.distributed.initialize(num_processes=None if count is None else int(count),
                               process_id=None if index is None else int(index))
    logging.info('Process %d of %d: %d of %d devices.', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)


def is_lead() -> bool:
  """Process 0: the one that writes shared files (config.json, logs, reports)."""
  return jax.process_index() == 0
