"""What every command-line entry point shares: quiet library logs, and one-line failures."""
import logging as logging_lib
import sys

from absl import app, logging


class _QuietLibraries(logging_lib.Filter):
  """Drops the INFO chatter of orbax (dozens of lines per checkpoint) from our logs."""

  def filter(self, record):
    return record.levelno > logging_lib.INFO or '/orbax/' not in record.pathname


def quiet_libraries():
  logging.get_absl_handler().addFilter(_QuietLibraries())


def fail(program, error, status=2):
  """Ends the program with one line on stderr (no traceback): what is wrong, how to fix it."""
  sys.stderr.write(f'{program}: error: {" ".join(str(error).split())}\n')
  sys.exit(status)


def run_program(program, run, argv, expected_errors):
  """The body of a tool's absl main: no stray arguments, quiet libraries, and the expected
  errors (bad input, bad flags) ending in one line and exit status 2."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  quiet_libraries()
  try:
    run()
  except expected_errors as error:
    fail(program, error)
