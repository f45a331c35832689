"""Checkpoints through orbax's CheckpointManager: the one place training saves and restores."""
import os

from absl import logging
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves a train state (any pytree of arrays) every so often, keeps the last few."""

  def __init__(self, directory: str, max_to_keep: int = 3):
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  @property
  def latest_step(self):
    return self.manager.latest_step()

  def save(self, step: int, state, force: bool = False):
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, abstract_state=None, step=None):
    """The state at `step` (default: the latest readable one), shaped and sharded like
    `abstract_state`; without one, the saved pytree as it is (nested dicts of arrays).

    A damaged latest checkpoint (truncated or half-written files) is skipped with a warning
    for the one before it, and so on; only a requested `step` is restored or fails as it is.
    """
    steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {self.manager.directory}.')
    for i, candidate in enumerate(steps):
      logging.info('Restoring checkpoint %d from %s', candidate, self.manager.directory)
      try:
        state = self.manager.restore(candidate, args=ocp.args.StandardRestore(abstract_state))
      except Exception as error:  # orbax raises many kinds for damaged files
        if step is not None or i + 1 == len(steps):
          raise
        logging.warning('Checkpoint %d in %s cannot be read (%s: %s); falling back to '
                        'checkpoint %d.', candidate, self.manager.directory,
                        type(error).__name__, error, steps[i + 1])
        continue
      for damaged in steps[:i]:  # training will write these steps again
        self.manager.delete(damaged)
      return state

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
