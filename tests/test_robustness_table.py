"""docs/robustness.md is the one list of hostile-user cases: every row names a test that
exists and reads the row, and the table parses (unique ids, known programs and statuses)."""
import os
import re

import robustness


def test_every_row_names_a_test_that_reads_it():
  assert len(robustness.CASES) >= 60  # the review's cases: the table must not silently empty
  problems = []
  for row in robustness.CASES.values():
    path, _, function = row.test.partition('::')
    full = os.path.join(robustness.REPO, path)
    if not os.path.isfile(full):
      problems.append(f'{row.id}: {path} does not exist')
      continue
    with open(full) as f:
      source = f.read()
    if not re.search(rf'^def {re.escape(function)}\(', source, re.M):
      problems.append(f'{row.id}: {path} has no test {function}')
    elif f"'{row.id}'" not in source:
      problems.append(f'{row.id}: {path} never names the row')
  assert not problems, '\n'.join(problems)


def test_rows_are_well_formed():
  for row in robustness.CASES.values():
    assert re.fullmatch(r'[a-z0-9]+(-[a-z0-9]+)+', row.id), row.id
    assert row.program in ('main', 'predict', 'sample', 'bundle', 'workdir'), row
    assert row.exit in (None, 0, 1, 2, 75), row
    assert row.names is None or row.exit != 0, row  # only failures have an error line
    assert row.test.startswith('tests/test_') and '::test_' in row.test, row


def test_the_parser_reads_a_table(tmp_path):
  text = ('intro\n\n| id | program | case | exit | names | test |\n|---|---|---|---|---|---|\n'
          '| a-b | main | `--x=1` given | 2 | `--x` | tests/test_a.py::test_b |\n'
          '| c-d | workdir | kept | — | — | tests/test_a.py::test_c |\n\n'
          '| other | table |\n|---|---|\n| not | read |\n')
  (tmp_path / 't.md').write_text(text)
  rows = robustness.read_table(str(tmp_path / 't.md'))
  assert list(rows) == ['a-b', 'c-d']
  assert rows['a-b'].exit == 2 and rows['a-b'].names == '--x'
  assert rows['a-b'].case == '`--x=1` given'
  assert rows['c-d'].exit is None and rows['c-d'].names is None
