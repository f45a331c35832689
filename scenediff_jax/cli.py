"""What every command-line entry point shares: quiet library logs, and one-line failures."""
import logging as logging_lib
import os
import sys

from absl import app, flags, logging


def default_compilation_cache_dir() -> str:
  """Where JAX's persistent compilation cache lives (compiler.use_persistent_cache) unless
  a config or flag says otherwise: under the user's cache, beside the datasets."""
  cache = os.environ.get('XDG_CACHE_HOME', os.path.join(os.path.expanduser('~'), '.cache'))
  return os.path.join(cache, 'scenediff_jax', 'jax_compilation_cache')


def define_compilation_cache_flag():
  """--compilation_cache_dir for a program (defined once per process: the tests import
  several programs)."""
  if 'compilation_cache_dir' not in flags.FLAGS:
    flags.DEFINE_string('compilation_cache_dir', default_compilation_cache_dir(),
                        'Where compiled programs are kept for the next run ("" turns it off).')
  return flags.FLAGS['compilation_cache_dir']


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax (dozens of lines per checkpoint) from our logs."""

  def filter(self, record):
    return record.levelno > logging_lib.INFO or '/orbax/' not in record.pathname


def quiet_libraries():
  logging.get_absl_handler().addFilter(_QuietLibraries())


MESH_RESOLUTIONS = (16, 32, 64, 128, 256)  # 16·2^k cells per axis; 512 takes minutes per object


class UsageError(ValueError):
  """A flag value that cannot work (exit status 2, like bad input)."""


def check_mesh_resolution(value):
  """`--mesh_resolution` of predict and sample, checked before any work.

  Args:
    value: the flag's value.
  Raises:
    UsageError: unless value is one of MESH_RESOLUTIONS.
  """
  if value not in MESH_RESOLUTIONS:
    raise UsageError(f'--mesh_resolution={value}: use '
                     f'{", ".join(map(str, MESH_RESOLUTIONS[:-1]))} or {MESH_RESOLUTIONS[-1]}.')


def check_count(flag, value, what, most=None):
  """A flag that counts something: at least 1 and, when `most` is given, at most that.

  Args:
    flag: its name without dashes, e.g. 'num'.
    value: its value.
    what: what it counts, for the message, e.g. 'scenes to draw'.
    most: the largest value that works (None: no limit), with why in `what`.
  Raises:
    UsageError: when value is out of range.
  """
  if value < 1 or (most is not None and value > most):
    bound = 'at least 1' if most is None else f'1 to {most}'
    raise UsageError(f'--{flag}={value}: give {bound} ({what}).')


def check_output_folder(output, flag='output'):
  """An output folder flag, checked before any work.

  Args:
    output: the flag's value (the folder may not exist yet).
    flag: its name without dashes.
  Returns:
    The folder's real path.
  Raises:
    UsageError: output is empty, a file (or anything but a folder), or under a file.
  """
  if not output:
    raise UsageError(f'--{flag} is empty: give the folder the results go to.')
  path = existing = os.path.realpath(output)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    where = 'is a file' if existing == path else f'is under the file {existing}'
    raise UsageError(f'--{flag}={output} {where}: give a folder (it is created if missing).')
  return path


def fail(program, error, status=2):
  """Ends the program with one line on stderr (no traceback): what is wrong, how to fix it."""
  sys.stderr.write(f'{program}: error: {" ".join(str(error).split())}\n')
  sys.exit(status)


def last_line(error) -> str:
  """The last non-empty line of an error's message (absl wraps config-file errors with the
  whole traceback), without the quotes KeyError adds."""
  text = str(error).replace('\\n', '\n').replace("\\'", "'")
  if len(text) > 1 and text[0] == text[-1] and text[0] in '\'"':
    text = text[1:-1]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def run_program(program, run, argv, expected_errors):
  """The body of a tool's absl main: no stray arguments, quiet libraries, the expected
  errors (bad input, bad flags) ending in one line and exit status 2, and OS errors (the
  disk) in one line and status 1."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  quiet_libraries()
  try:
    run()
  except expected_errors as error:
    fail(program, error)
  except OSError as error:  # a full or read-only disk: runtime, status 1
    fail(program, f'{error.filename or ""}: {error.strerror or error}; free space or fix the '
         'permissions and rerun.', 1)
