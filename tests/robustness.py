"""The robustness table (docs/robustness.md) as data: every hostile-user case, what must
happen, and the test that checks it. Tests take their expectations from here, so a case is
added in one place, the table, and `test_robustness_table.py` fails until a test covers it."""
import dataclasses
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = os.path.join(REPO, 'docs', 'robustness.md')
COLUMNS = ('id', 'program', 'case', 'exit', 'names', 'test')


@dataclasses.dataclass(frozen=True)
class Case:
  id: str
  program: str  # main, predict, sample, bundle, workdir
  case: str  # what a user does, in words
  exit: int | None  # the exit status a command must end with (None: not a command's status)
  names: str | None  # what the one error line must contain (None: no message is checked)
  test: str  # tests/FILE.py::test_function that checks the case


def _cell(text):
  """A cell's text; None for an empty one (—); a cell that is one `code span` loses its
  backticks."""
  text = text.strip()
  if text in ('', '—', '-'):
    return None
  if re.fullmatch(r'`[^`]*`', text):
    return text[1:-1]
  return text


def read_table(path=TABLE) -> dict:
  """{id: Case} from every row of every table in the file whose header is COLUMNS."""
  rows, header = {}, None
  with open(path) as f:
    for line in f:
      if not line.startswith('|'):
        header = None
        continue
      cells = [c.strip() for c in line.strip().strip('|').split('|')]
      if header is None:
        header = tuple(c.lower() for c in cells)
        continue
      if header != COLUMNS or re.fullmatch(r'[-: ]+', ''.join(cells)):
        continue
      values = dict(zip(COLUMNS, (_cell(c) for c in cells)))
      if values['id'] in rows:
        raise ValueError(f'{path}: case {values["id"]} appears twice.')
      values['exit'] = None if values['exit'] is None else int(values['exit'])
      rows[values['id']] = Case(**values)
  return rows


CASES = read_table()


def case(case_id) -> Case:
  """The table's row `case_id` (KeyError names the table when it is missing)."""
  if case_id not in CASES:
    raise KeyError(f'{case_id} is not a row of {TABLE}: add it there first.')
  return CASES[case_id]


def cases(program=None, test=None) -> list:
  """Rows of one program and/or of one test function (name without the file)."""
  return [c for c in CASES.values() if (program is None or c.program == program) and
          (test is None or c.test.split('::')[-1] == test)]


def one_error_line(stderr, program):
  """The single `program: error: ...` line of stderr; AssertionError unless exactly one and
  no traceback."""
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith(f'{program}: error:')]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def check_outcome(row: Case, status, stderr):
  """The exit status and the one error line that the table's row promises."""
  assert status == row.exit, (row.id, status, stderr[-3000:])
  if row.exit not in (0, None) and row.names is not None:
    line = one_error_line(stderr, row.program if row.program != 'bundle' else 'predict')
    assert row.names in line, (row.id, line)
