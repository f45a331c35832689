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
    """The state at `step` (default: the latest), shaped and sharded like `abstract_state`;
    without one, the saved pytree as it is (nested dicts of arrays)."""
    step = self.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.manager.directory}.')
    logging.info('Restoring checkpoint %d from %s', step, self.manager.directory)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
