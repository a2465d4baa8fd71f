"""The README's Python example runs as printed, from a clean process, and prints what the
README says it prints (to within what another CPU's rounding may move)."""

import re
import subprocess
import sys

import pytest

from launching import ROOT, env

SECTION = '## Use a trained model, compress an image'


def _example() -> tuple[str, str]:
  with open(f'{ROOT}/README.md') as f:
    text = f.read()
  section = text[text.index(SECTION):]
  code = section[section.index('```python\n') + len('```python\n'):]
  code = code[:code.index('```')]
  printed = re.search(r'It prints `([^`]+)`', section).group(1)
  return code, printed


def _numbers(line: str) -> list[float]:
  return [float(x.replace(',', '')) for x in re.findall(r'\d[\d,]*(?:\.\d+)?', line)]


def test_the_readme_example_runs_as_printed():
  code, printed = _example()
  assert 'flax_cae.load(' in code and 'compress(' in code and 'decompress(' in code
  assert len(code.strip().splitlines()) <= 12
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env(1), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  line = r.stdout.strip().splitlines()[-1]
  assert re.fullmatch(r'[\d,]+ bytes, \d+\.\d{3} bpp, \d+\.\d{2} dB', line), line
  got, want = _numbers(line), _numbers(printed)
  assert got[0] == pytest.approx(want[0], rel=0.005)  # bytes
  assert got[1] == pytest.approx(want[1], rel=0.005)  # bits per pixel
  assert got[2] == pytest.approx(want[2], abs=0.02)   # PSNR (dB)
