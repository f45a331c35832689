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
  """`with PreemptionWatch() as watch:` ... `if watch.stop_here(...): break`, then, with
  everything closed, `watch.raise_if_stopped(checkpoint_directory)`."""

  def __init__(self):
    self._signalled = False
    self._previous = None
    self.stopped_at = None

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

  def stop_here(self, checkpointer, step, state, saved: bool) -> bool:
    """Whether to stop after `step`; if so, its checkpoint is written (unless `saved`)."""
    if not self.requested(checkpointer, step):
      return False
    if not saved:
      checkpointer.save(step, state, force=True)
    self.stopped_at = step
    return True

  def raise_if_stopped(self, directory):
    """After the loop (logs and checkpointer closed): Preempted if training stopped early."""
    if self.stopped_at is not None:
      raise Preempted(f'Preempted after step {self.stopped_at}: checkpoint saved in '
                      f'{directory}; rerun the same command to continue from it.')
