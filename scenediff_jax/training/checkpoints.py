"""Checkpoints through orbax's CheckpointManager: the one place training saves and restores.

Nothing here deletes a checkpoint it cannot read. Read-only users (eval, export, predict)
stop with `CheckpointUnreadable`; training, which must go on from somewhere, resumes from the
newest one it can read and only then moves the newer unreadable ones aside to
`<directory>.unreadable/` (it says so)."""
import os
import shutil
import time

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from scenediff_jax.models import layer_stacks


class CheckpointUnreadable(RuntimeError):
  """The checkpoint asked for cannot be read; nothing was changed."""


def latest_step(directory: str):
  """The newest step in `directory` without opening (or creating) anything; None if none."""
  if not os.path.isdir(directory):
    return None
  steps = [int(name) for name in os.listdir(directory) if name.isdigit()]
  return max(steps, default=None)


class CheckpointMismatch(CheckpointUnreadable):
  """The checkpoint holds other arrays than the config asks for: another config's."""


def _check_shapes(saved, abstract, step, directory):
  """CheckpointMismatch unless every array asked for is saved with that shape (`saved`: the
  checkpoint's metadata tree)."""
  for path, want in jax.tree_util.tree_leaves_with_path(abstract):
    node = saved
    for key in path:
      node = node.get(key.key) if isinstance(node, dict) else None
    name = jax.tree_util.keystr(path)
    got = None if node is None else tuple(node.shape)
    if got != tuple(want.shape):
      held = 'no such array' if got is None else f'it of shape {got}'
      raise CheckpointMismatch(
          f'Checkpoint {step} in {directory} holds {held} where the config asks for {name} of '
          f'shape {tuple(want.shape)}: it was trained with another config. Give the '
          'config.json it was trained with.')


def _place(array, abstract):
  """A host array as a jax.Array of `abstract`'s dtype and sharding (every process passes
  the whole array; each places its own shards)."""
  array = np.asarray(array, abstract.dtype)
  sharding = getattr(abstract, 'sharding', None)
  if sharding is None:
    return jax.numpy.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


class Checkpointer:
  """Saves a train state (any pytree of arrays) every so often, keeps the last few.

  `read_only` opens an existing directory without creating it, and never writes or moves;
  its `restore` reads only the fields it is given (the parameters of a train state, say,
  without its optimizer state)."""

  def __init__(self, directory: str, max_to_keep: int = 3, read_only: bool = False):
    self.read_only = read_only
    self.manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only,
                                             read_only=read_only),
        # The generic pytree handler reads what StandardSave wrote, and can read part of it.
        # Naming the handler also lets a fresh manager read a checkpoint's metadata.
        item_handlers=(ocp.PyTreeCheckpointHandler() if read_only
                       else ocp.StandardCheckpointHandler()))

  @property
  def directory(self):
    return os.fspath(self.manager.directory)

  @property
  def latest_step(self):
    return self.manager.latest_step()

  @property
  def all_steps(self):
    return sorted(self.manager.all_steps())

  def saved_tree(self, step=None):
    """The metadata tree (nested dicts, an array's metadata at each leaf) of checkpoint `step`
    (default: the latest); None when there is none or it cannot be read."""
    step = self.latest_step if step is None else step
    if step is None:
      return None
    try:
      return self.manager.item_metadata(step).tree
    except Exception:  # pylint: disable=broad-except  # restore() says what is wrong
      return None

  def save(self, step: int, state, force: bool = False):
    self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def restore(self, abstract_state=None, step=None):
    """The state at `step` (default: the latest), shaped and sharded like `abstract_state`;
    without one, the saved pytree as it is (nested dicts of arrays). Read-only, the
    abstract state may be a dict of some of the saved top-level fields: only those are read.

    A latest checkpoint that cannot be read (truncated or missing files) raises
    CheckpointUnreadable when read-only, when `step` was asked for, or in a multi-process
    job (where the processes would have to agree). In training, older ones are tried, and
    once one is restored the newer unreadable ones are moved aside, with a warning: training
    writes those steps again. If none can be read, nothing is moved.
    """
    steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    fall_back = not self.read_only and step is None and jax.process_count() == 1
    unreadable = []
    for candidate in steps:
      logging.info('Restoring checkpoint %d from %s', candidate, self.directory)
      try:
        metadata = None if abstract_state is None else self.manager.item_metadata(candidate).tree
        if metadata is not None and layer_stacks.is_unrolled(metadata, abstract_state):
          state = self._restore_unrolled(candidate, abstract_state, metadata)
        else:
          if self.read_only and metadata is not None:
            _check_shapes(metadata, abstract_state, candidate, self.directory)
          state = self.manager.restore(candidate, args=self._restore_args(abstract_state))
      except CheckpointMismatch:
        raise
      except Exception as error:  # orbax raises many kinds for damaged files
        reason = f'{type(error).__name__}: {" ".join(str(error).split())[:300]}'
        unreadable.append((candidate, reason))
        if fall_back:
          continue
        raise CheckpointUnreadable(
            f'Checkpoint {candidate} in {self.directory} cannot be read ({reason}). Nothing '
            'was changed; if its files are only elsewhere, put them back. If it is damaged, '
            'move it out of the directory (single-process --mode=train does that itself) and '
            'training resumes from the one before.') from None
      for damaged, reason in unreadable:
        moved = self._move_aside(damaged)
        logging.warning('Checkpoint %d in %s cannot be read (%s); moved it to %s and resuming '
                        'from checkpoint %d. Delete it there once you no longer need it.',
                        damaged, self.directory, reason, moved, candidate)
      return state
    raise CheckpointUnreadable(
        f'No checkpoint in {self.directory} can be read (steps '
        f'{", ".join(str(s) for s, _ in unreadable)}; the newest: {unreadable[0][1]}). Nothing '
        'was moved: if the files are fine, the cause is elsewhere (memory, a changed '
        'config.mesh, the file system); otherwise use a new --workdir.')

  def _restore_args(self, abstract_state):
    if not self.read_only:
      return ocp.args.StandardRestore(abstract_state)
    if abstract_state is None:
      return ocp.args.PyTreeRestore()
    return ocp.args.PyTreeRestore(
        abstract_state, partial_restore=True,
        restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))

  def _restore_unrolled(self, step, abstract_state, metadata):
    """A checkpoint written before repeated layers were scanned (models/layer_stacks.py):
    read as it was saved, its runs of layers stacked into `abstract_state`'s layout. The
    checkpoint stays as it is; training's next save writes the scanned layout."""
    logging.info('Checkpoint %d in %s holds repeated layers one by one (saved before they '
                 'were scanned); stacking them.', step, self.directory)
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
    reader = ocp.PyTreeCheckpointer()
    try:
      saved = reader.restore(os.path.join(self.directory, str(step), 'default'),
                             args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    finally:
      reader.close()
    try:
      stacked = layer_stacks.stack_like(saved, abstract_state)
    except KeyError as error:
      raise CheckpointMismatch(
          f'Checkpoint {step} in {self.directory} holds no array {error} that the config asks '
          'for: it was trained with another config. Give the config.json it was trained '
          'with.') from None
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(stacked),
                                 jax.tree.leaves(abstract_state)):
      if np.shape(got) != tuple(want.shape):
        raise CheckpointMismatch(
            f'Checkpoint {step} in {self.directory} holds {jax.tree_util.keystr(path)} of '
            f'shape {np.shape(got)} where the config asks for {tuple(want.shape)}: it was '
            'trained with another config. Give the config.json it was trained with.')
    return jax.tree.map(_place, stacked, abstract_state)

  def _move_aside(self, step):
    """Moves checkpoint `step` out of the manager's sight (training writes the step again)."""
    aside = os.path.join(f'{self.directory}.unreadable', f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self.manager.reload()
    return aside

  def close(self):
    if not self.read_only:
      self.manager.wait_until_finished()
    self.manager.close()
