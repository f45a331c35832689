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
    jax.distributed.initialize()  # reads the coordinator, count and id from the environment
    logging.info('Process %d of %d: %d of %d devices.', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)


def is_lead() -> bool:
  """Process 0: the one that writes shared files (config.json, logs, reports)."""
  return jax.process_index() == 0
