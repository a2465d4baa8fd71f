"""The documentation: the site builds with `mkdocs build --strict` (a broken link, a missing
image or page fails), every config field is documented, and README and docs speak of the
software only."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import ml_collections

from configs import default
from launching import ROOT

DOCS = pathlib.Path(ROOT) / 'docs'
README = pathlib.Path(ROOT) / 'README.md'


def test_the_site_builds_strictly(tmp_path):
  assert importlib.util.find_spec('mkdocs') is not None, (
      "mkdocs is not installed: pip install -e '.[test,docs]' (the README's test command).")
  proc = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '-q',
                         '-d', str(tmp_path / 'site')], cwd=ROOT, capture_output=True,
                        text=True, timeout=600, env=dict(os.environ, NO_MKDOCS_2_WARNING='1'))
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert (tmp_path / 'site' / 'api' / 'index.html').read_text().count('flax_cae.api.load') >= 1


def _fields(config, prefix=''):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _fields(value, f'{prefix}{key}.')
    else:
      yield prefix + key


def test_every_config_field_is_documented():
  page = (DOCS / 'configs.md').read_text()
  missing = [f for f in _fields(default.get_config()) if f'`{f}`' not in page]
  assert not missing, f'docs/configs.md does not document {missing}'


def test_readme_and_docs_speak_of_the_software():
  pages = [README, pathlib.Path(ROOT) / 'benchmarks' / 'RESULTS.md', *DOCS.rglob('*.md')]
  banned = re.compile(r'\bissue \d+|\bsessions?\b|\.\./shared/docs|\blent\b|this stop\b', re.I)
  found = [f'{p.relative_to(ROOT)}: {m.group(0)!r}' for p in pages
           for m in banned.finditer(p.read_text())]
  assert not found, found
  assert len(README.read_text().splitlines()) <= 250


# --- result tables are written from records --------------------------------------------

# Pages that report results: every table on them is written by docs/tables.py, except these
# tables of settings and descriptions (their first header cells), which report no measurement.
RESULT_PAGES = ['README.md', 'docs/codec.md', 'docs/speed.md', 'docs/performance.md'] + [
    f'docs/studies/{p}.md' for p in ('s1', 's2', 's3', 's4', 'best-codes',
                                     'compression-in-bytes')]
NOT_RESULTS = ('| study | members |', '| config | paper |', '| study config |',
               '| member | model |', '| setting | value |', '| stage | what it runs |')


def _tables_module():
  sys.path.insert(0, str(DOCS))
  try:
    import tables  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(str(DOCS))
  return tables


def test_every_result_table_is_the_one_its_records_give():
  tables = _tables_module()
  diffs = tables.differences()
  assert not diffs, '\n\n'.join(diffs)
  shown = [name for _, name in tables.marked()]
  assert len(shown) >= 20 and set(shown) == set(tables.TABLES), (
      'a table defined in docs/tables.py is on no page, or the reverse',
      set(tables.TABLES) ^ set(shown))


def test_a_table_cell_edited_by_hand_is_caught(tmp_path):
  tables = _tables_module()
  page = tmp_path / 's1.md'
  text = (DOCS / 'studies' / 's1.md').read_text()
  m = next(tables.MARKER.finditer(text))
  row = m['body'].splitlines()[2]  # the first data row
  cells = row.split(' | ')
  cells[1] = f'{float(cells[1]) + 0.01:.2f}'  # its test PSNR, 0.01 dB higher
  page.write_text(text.replace(row, ' | '.join(cells), 1))
  diffs = tables.differences([page])
  assert len(diffs) == 1 and f'table {m["name"]} differs' in diffs[0], diffs
  assert '+' + row in diffs[0].splitlines(), diffs[0]  # the records' row, shown as the fix
  assert tables.differences([DOCS / 'studies' / 's1.md']) == []


def test_result_pages_hold_no_table_typed_by_hand():
  tables = _tables_module()
  for name in RESULT_PAGES:
    text = tables.MARKER.sub('', (pathlib.Path(ROOT) / name).read_text())
    lines = text.splitlines()
    for i, line in enumerate(lines):
      if line.startswith('|') and (i == 0 or not lines[i - 1].startswith('|')):
        assert line.startswith(NOT_RESULTS), (
            f'{name} has a table typed by hand ({line[:80]}); write it from its records '
            'with docs/tables.py')
