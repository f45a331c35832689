"""A workdir's guards: its config.json is checked against a new run's config before anything
is written, and a lock on one file keeps a second training out while one runs.

What a run may change in a finished or interrupted workdir is its budget (step counts,
checkpoint and log intervals, evaluation settings); what it may not change is anything that
shapes the networks or the data they learnt from (`MODEL_AND_DATA_FIELDS`): restoring the
checkpoints with those would fail, or worse, succeed with another meaning.
"""
import fcntl
import json
import os
import socket
import tempfile
import time

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
# Config groups and fields that change the model or the data (dotted paths; a group covers
# every field under it) ...
MODEL_AND_DATA_FIELDS = ('data', 'method', 'max_objects', 'shape_model', 'image_encoder',
                         'denoiser', 'diffusion', 'shape_training.surface_points',
                         'training.statistics_scenes', 'training.latent_normalization')
# Fields added after workdirs were trained without them, and the value those workdirs were
# trained with: the paper's recipe, which code reading an older config.json also assumes.
LEGACY_VALUES = {'diffusion.prediction': 'eps', 'diffusion.schedule': 'linear',
                 'diffusion.loss_weighting': 'none', 'training.latent_normalization': 'channel',
                 'shape_model.part_distances': False}
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
  dicts) differ. A field the new config lacks counts as different; one the old config lacks
  (a workdir from before the field existed) has its LEGACY_VALUES value, or otherwise is
  not compared (it was trained with what is now its default)."""
  new, old = _flat(new), _flat(old)
  old = {**{k: v for k, v in LEGACY_VALUES.items() if k in new}, **old}
  missing = '(absent)'
  return [f'{name}: {old.get(name, missing)} → {new.get(name, missing)}'
          for name in sorted(set(new) | set(old))
          if _covered(name) and name in old and new.get(name, missing) != old[name]]


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


# What a config.json guards: files made with it (checkpoints, derived files, a bundle).
PRODUCTS = ('checkpoints', 'shape_latents.npz', 'statistics.json', 'export')


def read_statistics(path):
  """The normalization.SceneStatistics in `path` (FileNotFoundError when there is none);
  WorkdirError when the file cannot be read."""
  from scenediff_jax.geometry.normalization import SceneStatistics
  try:
    return SceneStatistics.read(path)
  except FileNotFoundError:
    raise
  except ValueError as error:
    raise WorkdirError(f'{error}; delete it and rerun --mode=train on the workdir to recompute '
                       'it.') from None


def check_config(config, workdir) -> None:
  """WorkdirError unless `config` may run in `workdir`: nothing trained there yet, or a
  config.json whose model and data fields are the same."""
  saved = read_config(workdir)
  if saved is None or not any(os.path.exists(os.path.join(workdir, p)) for p in PRODUCTS):
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
    # A unique name: every process of a multi-host job probes the same shared folder.
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-test-'):
      pass
  except OSError as error:
    raise WorkdirError(f'--workdir={workdir} cannot be written to ({error.strerror or error}): '
                       'give a folder on a writable disk.') from None


class WorkdirLock:
  """`with WorkdirLock(workdir, mode):` holds an exclusive lock on workdir/.lock (fcntl.flock)
  while training runs, with the holder's pid, host, mode and start time written in it. A
  second one stops with WorkdirLocked naming the first. The kernel releases the lock when its
  process ends, however it ends, so a lock left by a killed training is simply taken.

  The file itself is never deleted: a process waiting on a deleted file's lock would hold a
  lock nobody else sees."""

  def __init__(self, workdir: str, mode: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.owner = {'pid': os.getpid(), 'host': socket.gethostname(), 'mode': mode,
                  'since': time.strftime('%Y-%m-%d %H:%M:%S')}
    self._file = None

  def __enter__(self):
    f = open(self.path, 'a+')
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: held by a live process
      f.seek(0)
      try:
        owner = json.loads(f.read() or '{}')
      except ValueError:
        owner = {}
      f.close()
      raise WorkdirLocked(
          f'{os.path.dirname(self.path)} is in use by process {owner.get("pid", "?")} on '
          f'{owner.get("host", "?")} (--mode={owner.get("mode", "?")}, since '
          f'{owner.get("since", "?")}): wait for it to finish, or use another --workdir.'
          ) from None
    f.seek(0)
    f.truncate()
    json.dump(self.owner, f)
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc):
    if self._file is not None:
      self._file.truncate(0)  # the lock is free: no owner to name
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None
