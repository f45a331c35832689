"""Folders that appear complete or not at all: written aside, renamed into place.

Every staging name carries its owner's process id (`<prefix><pid>-<random>`), so that what a
killed run (SIGKILL, power loss) left behind is recognised and removed by the next run, while
a run still in progress keeps its own.
"""
import contextlib
import os
import re
import secrets
import shutil
import tempfile


def owner_alive(pid) -> bool:
  """Whether process `pid` may still be running (when in doubt: yes, so nothing is removed).

  Args:
    pid: a process id read from a staging name.
  Returns:
    False only when the system says there is no such process.
  """
  if os.name != 'posix' or pid < 1:  # os.kill(pid, 0) would terminate on Windows; 0 = our group
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (OSError, OverflowError):  # PermissionError: alive, another user's
    return True
  return True


def staging_owner(name, prefix):
  """The pid in a staging name `<prefix><pid>-<random>`, or None when it is not one."""
  match = re.fullmatch(re.escape(prefix) + r'([0-9]+)-.*', name, re.DOTALL)
  return int(match.group(1)) if match else None


def remove_dead_staging(folder, prefix, backup=None):
  """Removes the `<prefix><pid>-*` folders in `folder` whose owner process is gone.

  Args:
    folder: where to look (a missing or unreadable folder has nothing to remove).
    prefix: the staging names' prefix, e.g. '.predict-tmp-'.
    backup: a subfolder of a staging folder holding files of `folder` that the dead run had
      moved aside to replace them: they are put back first (it died midway).
  Returns:
    The paths removed.
  """
  try:
    names = os.listdir(folder)
  except OSError:
    return []
  removed = []
  for name in sorted(names):
    pid, path = staging_owner(name, prefix), os.path.join(folder, name)
    is_folder = os.path.isdir(path) and not os.path.islink(path)
    if pid is not None and is_folder and not owner_alive(pid):
      saved = os.path.join(path, backup) if backup else None
      if saved and os.path.isdir(saved):
        for kept in os.listdir(saved):
          os.replace(os.path.join(saved, kept), os.path.join(folder, kept))
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def _recover(parent, name):
  """What a killed atomic_directory(parent/name) left: its staging folders are removed, and
  an old output renamed aside is put back if nothing replaced it, else removed."""
  remove_dead_staging(parent, f'.{name}.tmp-')
  target, prefix = os.path.join(parent, name), f'.{name}.old-'
  for old in sorted(os.listdir(parent)):
    pid = staging_owner(old, prefix)
    if pid is None or owner_alive(pid):
      continue
    old = os.path.join(parent, old)
    if not os.path.lexists(target):  # killed between the two renames: the old one is all there is
      os.rename(old, target)
    elif os.path.isdir(old) and not os.path.islink(old):
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.remove(old)


@contextlib.contextmanager
def atomic_directory(output_dir):
  """`with atomic_directory(out) as staging:` write into staging; on success it replaces
  `out` (an existing one is renamed aside first and deleted last), on any exception it is
  removed and `out` is left exactly as it was. The staging folder is a hidden sibling
  (`.<name>.tmp-<pid>-<random>`), so the final rename never crosses file systems; those of
  dead processes are removed on entry. Only for folders the program owns (an export, a
  sample): everything else in `out` is replaced."""
  target = os.path.abspath(os.fspath(output_dir))
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  _recover(parent, name)
  staging = tempfile.mkdtemp(prefix=f'.{name}.tmp-{os.getpid()}-', dir=parent)
  try:
    yield staging
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the output should not be
    old = None
    if os.path.lexists(target):
      old = os.path.join(parent, f'.{name}.old-{os.getpid()}-{secrets.token_hex(4)}')
      os.rename(target, old)
    try:
      os.rename(staging, target)
    except BaseException:
      if old is not None:
        os.rename(old, target)
      raise
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if old is not None:
    if os.path.isdir(old) and not os.path.islink(old):
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.remove(old)
