"""Folders that appear complete or not at all: written aside, renamed into place."""
import contextlib
import os
import secrets
import shutil
import tempfile


@contextlib.contextmanager
def atomic_directory(output_dir):
  """`with atomic_directory(out) as staging:` write into staging; on success it replaces
  `out` (an existing one is renamed aside first and deleted last), on any exception it is
  removed and `out` is left exactly as it was. The staging folder is a hidden sibling
  (`.<name>.tmp-<random>`), so the final rename never crosses file systems."""
  target = os.path.abspath(os.fspath(output_dir))
  parent, name = os.path.split(target)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
  try:
    yield staging
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the output should not be
    old = None
    if os.path.lexists(target):
      old = os.path.join(parent, f'.{name}.old-{secrets.token_hex(4)}')
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
