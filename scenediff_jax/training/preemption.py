"""Preemption: SIGTERM (what SLURM, Kubernetes and a TPU VM's maintenance send before they
stop a job) or orbax's multi-host preemption notice ends training after the current step,
with a checkpoint of that step. Rerunning the same command continues from it exactly: the
batch of a step and its random key are functions of the step."""
import os
import signal
import threading

from absl import logging
import jax
import numpy as np


# The main job's exit status after a preemption checkpoint: "temporary failure, try again"
# (sysexits.h), so that schedulers can requeue it (launch/slurm.sbatch does).
EXIT_STATUS = os.EX_TEMPFAIL  # 75


class Preempted(Exception):
  """Training stopped early on request; the workdir holds a checkpoint of the last step."""


class PreemptionWatch:
  """`with PreemptionWatch() as watch:` ... `if watch.requested(checkpointer, step): ...`"""

  def __init__(self):
    self._signalled = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals reach only that one
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _on_signal(self, signum, frame):
    del frame
    logging.warning('Signal %d: stopping after this step with a checkpoint.', signum)
    self._signalled = True

  def requested(self, checkpointer, step: int) -> bool:
    """Whether to stop now; every process gets the same answer."""
    stop = self._signalled
    if jax.process_count() > 1:  # a signal may reach only some of the processes
      from jax.experimental import multihost_utils
      stop = bool(np.any(multihost_utils.process_allgather(np.array(stop))))
    return stop or bool(checkpointer.manager.reached_preemption(step))
