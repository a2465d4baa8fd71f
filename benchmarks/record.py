"""A benchmark's record, as docs/tables.py reads it: OUT.md (the printed table), OUT.json
(the header line as 'title', the rows with every timed round, and any extra fields) and
OUT.csv (the rows without their nested rounds); and the machine part of that header line."""

import csv
import datetime
import json
import platform
from pathlib import Path


def machine_line(versions: str = '') -> str:
  """'1 x cpu (cpu), CPU: <model, cores, vector extensions>, jax X, flax Y<versions>, host,
  date, commit C': what a speed figure holds for (ratios move with the CPU's extensions)."""
  import flax  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from flax_cae.runtime import machine  # pylint: disable=g-import-not-at-top
  dev = jax.devices()[0]
  return (f'{jax.device_count()} x {dev.device_kind} ({jax.default_backend()}), '
          f'CPU: {machine.cpu()}, jax {jax.__version__}, flax {flax.__version__}{versions}, '
          f'{platform.node()}, {datetime.date.today()}, commit {machine.commit()}')


def write(out: str, title: str, rows: list[dict], text: str, *, sort_columns: bool = False,
          **extra):
  Path(out).parent.mkdir(parents=True, exist_ok=True)
  Path(f'{out}.md').write_text(text + '\n')
  Path(f'{out}.json').write_text(json.dumps({'title': title, 'rows': rows, **extra}, indent=2))
  flat = [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
  columns = list(dict.fromkeys(k for r in flat for k in r))
  with open(f'{out}.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=sorted(columns) if sort_columns else columns)
    w.writeheader()
    w.writerows(flat)
