"""The benchmarks run (at a tiny size): they prove they work, they assert no speed."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_steps_per_call_benchmark_runs(tmp_path):
  out = tmp_path / 'rows.json'
  proc = subprocess.run(
      [sys.executable, 'benchmarks/steps_per_call.py', '--model=base_cae', '--batch=8',
       '--steps=2', '--ks=1,2', '--image=16,16,1', '--n=64', f'--json={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '| data | steps per call | images/s |' in proc.stdout
  rows = json.loads(out.read_text())['rows']
  assert [(r['data'], r['steps_per_call']) for r in rows] == [
      ('device (uint8)', 1), ('device (uint8)', 2), ('host, streamed', 1)]
  assert all(r['images_per_second'] > 0 for r in rows)
