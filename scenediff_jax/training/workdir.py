"""A workdir's guards: its config.json is checked against a new run's config before anything
is written, and one lock file keeps a second training out while one runs.

What a run may change in a finished or interrupted workdir is its budget (step counts,
checkpoint and log intervals, evaluation settings); what it may not change is anything that
shapes the networks or the data they learnt from (`MODEL_AND_DATA_FIELDS`): restoring the
checkpoints with those would fail, or worse, succeed with another meaning.
"""
import json
import os
import socket
import time

from absl import logging

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
# Config groups and fields that change the model or the data (dotted paths; a group covers
# every field under it) ...
MODEL_AND_DATA_FIELDS = ('data', 'method', 'max_objects', 'shape_model', 'image_encoder',
                         'denoiser', 'diffusion', 'shape_training.surface_points',
                         'training.statistics_scenes')
# ... except these, which only say where the data is or how to sample a trained model.
FREE_FIELDS = ('data.manual_dir', 'data.shape_manual_dir', 'diffusion.sampling_steps',
               'diffusion.eta', 'diffusion.guidance_scale', 'diffusion.clip_x0')


class WorkdirError(ValueError):
  """The workdir cannot take this run (its message says why and what to do)."""


class WorkdirLocked(WorkdirError):
  """Another process trains into the workdir."""


def _flat(tree, prefix=''):
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}.{key}' if prefix else key
    flat.update(_flat(value, name) if isinstance(value, dict) else {name: value})
  return flat


def _covered(name):
  within = lambda field: name == field or name.startswith(field + '.')
  return any(map(within, MODEL_AND_DATA_FIELDS)) and not any(map(within, FREE_FIELDS))


def model_and_data_differences(new: dict, old: dict) -> list:
  """['field: old → new', ...] for the MODEL_AND_DATA_FIELDS where two configs (as JSON
  dicts) differ; a field absent from one of them counts as different."""
  new, old = _flat(new), _flat(old)
  missing = '(absent)'
  return [f'{name}: {old.get(name, missing)} → {new.get(name, missing)}'
          for name in sorted(set(new) | set(old))
          if _covered(name) and new.get(name, missing) != old.get(name, missing)]


def config_dict(config) -> dict:
  """A ConfigDict as config.json holds it (tuples as lists)."""
  return json.loads(config.to_json_best_effort())


def read_config(workdir):
  """The workdir's config.json as a dict, or None when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as error:
    raise WorkdirError(f'{path} cannot be read ({error}); restore it, or use a new --workdir.'
                       ) from None
  if not isinstance(saved, dict):
    raise WorkdirError(f'{path} does not hold a config; restore it, or use a new --workdir.')
  return saved


def check_config(config, workdir) -> None:
  """WorkdirError unless `config` may run in `workdir`: no config.json yet, or one whose
  model and data fields are the same."""
  saved = read_config(workdir)
  if saved is None:
    return
  differences = model_and_data_differences(config_dict(config), saved)
  if differences:
    shown = '; '.join(differences[:6]) + ('; ...' if len(differences) > 6 else '')
    raise WorkdirError(
        f'The config differs from {os.path.join(workdir, CONFIG_FILE)} in fields that change '
        f'the model or the data ({len(differences)}: {shown}). Give the same values (and the '
        'same config variant), or use a new --workdir.')


def write_config(config, workdir) -> None:
  """config.json, written aside and renamed into place (a reader never sees half of it)."""
  path = os.path.join(workdir, CONFIG_FILE)
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + '.tmp', path)


def prepare(workdir, create: bool) -> None:
  """WorkdirError if `workdir` is a file, or (with `create`) cannot be made or written to;
  with `create` it exists afterwards."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'--workdir={workdir} is a file: give a folder (new or from an earlier '
                       'run).')
  if not create:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write-test-{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as error:
    raise WorkdirError(f'--workdir={workdir} cannot be written to ({error.strerror or error}): '
                       'give a folder on a writable disk.') from None


def _process_start(pid):
  """The process's start time in clock ticks after boot (Linux), or None where unknown: with
  the pid it tells a live owner from a new process that got the same pid."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(owner) -> bool:
  try:
    os.kill(int(owner['pid']), 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's process: alive
    return True
  started = _process_start(owner['pid'])
  return started is None or owner.get('process_start') in (None, started)


class WorkdirLock:
  """`with WorkdirLock(workdir, mode):` holds workdir/.lock (pid, host, mode, start) while
  training runs. A second one stops with WorkdirLocked naming the first; a lock whose process
  is gone on this host (killed, say) is stale and taken over with a warning. A lock from
  another host cannot be checked from here: the message says how to remove it."""

  def __init__(self, workdir: str, mode: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.owner = {'pid': os.getpid(), 'host': socket.gethostname(), 'mode': mode,
                  'since': time.strftime('%Y-%m-%d %H:%M:%S'),
                  'process_start': _process_start(os.getpid())}
    self._held = False

  def _read(self):
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # half-written by a process killed while writing it: stale

  def __enter__(self):
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._read()
        if owner is None:  # released meanwhile
          continue
        if owner and (owner.get('host') != self.owner['host'] or _alive(owner)):
          raise WorkdirLocked(
              f'{os.path.dirname(self.path)} is in use by process {owner.get("pid")} on '
              f'{owner.get("host")} (--mode={owner.get("mode")}, since {owner.get("since")}): '
              f'wait for it to finish or use another --workdir; if that process is gone, '
              f'delete {self.path}.')
        logging.warning('Removing the stale lock %s (%s): its process is gone.', self.path,
                        owner or 'unreadable')
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(self.owner, f)
      self._held = True
      return self
    raise WorkdirLocked(f'Could not take the lock {self.path}; retry.')

  def __exit__(self, *exc):
    if self._held and (self._read() or {}).get('pid') == self.owner['pid']:
      os.remove(self.path)
    self._held = False
