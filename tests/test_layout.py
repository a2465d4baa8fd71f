"""The package's layout is checked, not only described: import-linter's contracts in
pyproject.toml hold (and break when a forbidden import is added), every folder says what
lives in it and what it may import, and no module or function grows past its size."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'flax_cae'
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LINT = [sys.executable, '-c',
        'import sys; from importlinter.cli import lint_imports_command; '
        'sys.exit(lint_imports_command())']


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess:
  """import-linter's own command on the package under `root`, with its pyproject.toml."""
  env = dict(os.environ, PYTHONPATH=str(root))
  return subprocess.run(LINT, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
  result = lint_imports(ROOT)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert 'Contracts: 2 kept, 0 broken.' in result.stdout


@pytest.mark.parametrize('module,line,broken', [
    # A model that reaches up into the training loop.
    ('models/layers.py', 'from flax_cae.training import loop',
     'flax_cae.models.layers -> flax_cae.training.loop'),
    # The machinery importing science.
    ('runtime/writers.py', 'from flax_cae.measures import metrics',
     'flax_cae.runtime.writers -> flax_cae.measures.metrics'),
    # The package importing a benchmark.
    ('data/pipeline.py', 'import benchmarks.throughput',
     'flax_cae.data.pipeline -> benchmarks'),  # (import-linter names an outside package alone)
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
  shutil.copytree(PACKAGE, tmp_path / 'flax_cae', ignore=shutil.ignore_patterns('__pycache__'))
  shutil.copy(ROOT / 'pyproject.toml', tmp_path)
  target = tmp_path / 'flax_cae' / module
  target.write_text(target.read_text() + f'\n{line}  # added by the test\n')
  result = lint_imports(tmp_path)
  assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-2000:]
  assert 'BROKEN' in result.stdout and broken in result.stdout, result.stdout[-3000:]


def test_every_folder_is_in_the_layers_and_says_what_it_may_import():
  config = tomllib.loads((ROOT / 'pyproject.toml').read_text())
  layers = next(c for c in config['tool']['importlinter']['contracts']
                if c['type'] == 'layers')['layers']
  layered = {m.strip() for layer in layers for m in layer.split('|')}
  for init in sorted(PACKAGE.glob('*/__init__.py')):
    name = f'flax_cae.{init.parent.name}'
    assert name in layered, f'{name} is in no layer of [tool.importlinter]'
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and 'May import' in doc, f'{init} does not say what it may import'


def _sizes():
  for path in sorted(PACKAGE.rglob('*.py')) + [ROOT / 'launch.py']:
    source = path.read_text()
    lines = source.splitlines()
    yield path, len(lines), [
        (node.name, node.end_lineno - node.lineno + 1, lines[node.lineno - 1])
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_module_or_function_outgrows_one_job():
  """A function longer than MAX_FUNCTION_LINES carries its reason beside its def
  (`# long: ...`)."""
  too_long = []
  for path, n, functions in _sizes():
    if n > MAX_MODULE_LINES:
      too_long.append(f'{path.relative_to(ROOT)}: {n} lines')
    too_long += [f'{path.relative_to(ROOT)}:{name}: {length} lines'
                 for name, length, first in functions
                 if length > MAX_FUNCTION_LINES and '# long:' not in first]
  assert not too_long, too_long
