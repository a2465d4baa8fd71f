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
