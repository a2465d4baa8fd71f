"""The tables of docs/speed.md and docs/performance.md, written from benchmarks/results/.

Each table starts with the header line its run wrote into NAME.json (device, CPU, versions,
host, date, commit), in italics, and is read from NAME.csv (from NAME.json where the CSV
holds less: members.py writes none, cpu_malloc_ab.csv rounds its rates); a table whose record
is missing is an error, as for any record.
"""

import json
import statistics

from tables import BENCH, bench_csv, csv_table, missing, num, register, table

DASH = '—'
# benchmarks/throughput.py's PEAK_FLOPS for the H200 at float32 (TF32), the record's device.
PEAK_FLOPS_H200_FLOAT32 = 494e12
# The models with a PyTorch copy, in the order the pages list them.
TORCH_MODELS = ('base_cae', 'cae', 'improved_cae', 'improved_cae+skips')


def times(ratio, digits: int = 2) -> str | None:
  """A ratio as a table cell, '1.04x'; None (a dash) where it is missing."""
  return None if missing(ratio) else f'{ratio:.{digits}f}x'


def header(name: str, extra: str = '') -> str:
  """The run's own header line (benchmarks/results/NAME.json's title), in italics."""
  record = json.loads((BENCH / f'{name}.json').read_text())
  title = (record.get('title') or record.get('header')).rstrip('.')
  if 'CPU:' not in title and '(cpu)' in title:
    title += '; the header of this run names no CPU model, core count or vector extensions'
  return f'*`benchmarks/results/{name}.json`: {title}{extra}.*\n\n'


def same_function(rows: list[dict]) -> str:
  """The check that the PyTorch mirror is the same function, as throughput.py prints it."""
  seen = {}
  for r in rows:
    if not missing(r.get('params')):
      seen[r['model']] = (f"{r['model']} {r['params']:,} parameters on both sides, outputs "
                          f"within {r['same_function_max_diff']:.0e}")
  return '\nSame function: ' + '; '.join(seen[m] for m in sorted(seen)) + '.\n'


def throughput(name: str, columns: list[tuple[str, str, str]], rows=None,
               check: bool = False) -> str:
  rows = bench_csv(name) if rows is None else rows
  text = header(name) + csv_table(rows, columns, dash=DASH)
  return text + same_function(rows) if check else text


MODEL = ('model', 'model', 's')
BATCH = ('batch', 'batch', 's')
TRAIN = ('train img/s', 'train_ips', ',.0f')
EVAL = ('eval img/s', 'eval_ips', ',.0f')
COMPILE = ('compile s', 'compile_s', '.1f')
EPOCH = ('epoch s (50,000 img)', 'epoch_s', '.2f')
EAGER = [('PyTorch eager img/s', 'torch_eager_ips', ',.0f'),
         ('flax-cae / PyTorch eager', 'vs_torch_eager', '.2f')]
COMPILED = [('PyTorch compile img/s', 'torch_compile_ips', ',.0f'),
            ('flax-cae / PyTorch compile', 'vs_torch_compile', '.2f')]


# --- GPU -----------------------------------------------------------------------------------


@register
def gpu_float32():
  rows = bench_csv('gpu_float32')
  if 'flops_counted' not in json.loads((BENCH / 'gpu_float32.json').read_text()):
    # A record from before throughput.py counted a one-step compile: it divided the FLOPs of
    # a 16-step call by 16, while XLA's cost analysis counts a loop's body once, so its FLOP
    # columns are XLA's count over 16; scaled back here, the peak from the scaled TFLOP/s.
    peak = PEAK_FLOPS_H200_FLOAT32
    rows = [dict(r, tflops=r['tflops'] * r['steps_per_call'],
                 peak_fraction=r['tflops'] * r['steps_per_call'] * 1e12 / peak) for r in rows]
  return throughput('gpu_float32', [MODEL, BATCH, TRAIN, EVAL, COMPILE, EPOCH,
                                    ('TFLOP/s', 'tflops', '.2f'),
                                    ('of peak', 'peak_fraction', '.1%')] + EAGER + COMPILED,
                    rows=rows, check=True)


@register
def gpu_bfloat16():
  return throughput('gpu_bfloat16', [MODEL, ('dtype', 'dtype', 's'), TRAIN, EVAL, COMPILE,
                                     EPOCH])


# --- CPU against PyTorch -------------------------------------------------------------------


@register
def cpu_float32():
  return throughput('cpu_float32', [MODEL, BATCH, TRAIN, EVAL, COMPILE, EPOCH] + EAGER)


@register
def cpu_vs_torch_compile():
  return throughput('cpu_vs_torch_compile', [MODEL, TRAIN, EVAL] + EAGER + COMPILED,
                    check=True)


@register
def cpu_xeon_float32():
  """The same comparison on a 2-core Xeon with AVX-512 and AMX: the models with a PyTorch
  copy (the others are timed too, without a PyTorch column)."""
  rows = [r for r in bench_csv('cpu_xeon_float32') if r['model'] in TORCH_MODELS]
  return throughput('cpu_xeon_float32', [MODEL, TRAIN, EVAL] + EAGER, rows=rows, check=True)


RESIDENT = [('PyTorch resident img/s', 'torch_resident_ips', ',.0f'),
            ('flax-cae / PyTorch resident', 'vs_torch_resident', '.2f')]


@register
def cpu_xeon_peer():
  """flax-cae against the three PyTorch loops, the device-resident one included."""
  return throughput('cpu_xeon_peer', [MODEL, TRAIN] + EAGER + COMPILED + RESIDENT, check=True)


# --- CPU levers ----------------------------------------------------------------------------

# cpu_levers.csv's variants: each turns one lever back to XLA's own form.
LEVERS = (
    ('cpu_convolutions=xla', "`cpu_convolutions='eigen'`: compiled steps pass "
     '`xla_cpu_experimental_ynn_fusion_type` = dots and reductions only, so convolutions run '
     'on Eigen', 'yes, CPU default'),
    ('model.transposed_conv=dilated', 'sub-pixel stride-2 transposed convs '
     '(`model.transposed_conv`)', 'yes, every backend'),
    ('model.conv_input_grad=xla', 'sub-pixel input gradient of the stride-2 encoder convs '
     '(`model.conv_input_grad`)', 'yes, CPU default'),
)


@register
def cpu_levers():
  """flax-cae / PyTorch eager with each lever turned back (variant) -> with all (default)."""
  rows = bench_csv('cpu_levers')
  ratio = {(r['model'], r['variant']): r['vs_torch_eager'] for r in rows}
  models = list(dict.fromkeys(r['model'] for r in rows))
  out = []
  for variant, lever, kept in LEVERS:
    out.append([lever, f'`{variant}`'] + [
        f"{num(ratio[m, variant])} -> {num(ratio[m, 'default'])}" for m in models] + [kept])
  return header('cpu_levers') + table(['lever', 'variant (XLA\'s form)'] + models + ['kept'], out)


@register
def cpu_ssim_blur():
  """Evaluation img/s before (cpu_levers.csv's default rows) and after (cpu_eval.csv) SSIM's
  blur became two matrix products; both runs with glibc's default malloc."""
  before = {r['model']: r for r in bench_csv('cpu_levers') if r['variant'] == 'default'}
  after = {r['model']: r for r in bench_csv('cpu_eval')}
  rows = [[m, str(before[m]['batch']), num(before[m]['eval_ips'], ',.0f'),
           num(after[m]['eval_ips'], ',.0f')] for m in TORCH_MODELS]
  return (header('cpu_levers') + header('cpu_eval') + table(
      ['model', 'batch', 'eval img/s, blur as convolutions (cpu_levers.csv, default variant)',
       'eval img/s, blur as matrix products (cpu_eval.csv)'], rows))


# --- CPU host memory -----------------------------------------------------------------------


@register
def cpu_malloc_ab():
  """Six processes alternating cpu_malloc=system and keep: each one's training img/s, and the
  ratio of the medians. Read from cpu_malloc_ab.json, whose runs hold the full-precision
  rates (the CSV beside it rounds them to 0.1 img/s)."""
  runs = sorted(json.loads((BENCH / 'cpu_malloc_ab.json').read_text())['runs'],
                key=lambda run: run['process'])
  rows = [dict(r, cpu_malloc=run['cpu_malloc']) for run in runs for r in run['rows']]
  out = []
  for m in dict.fromkeys(r['model'] for r in rows):
    ips = {s: [r['train_ips'] for r in rows if r['model'] == m and r['cpu_malloc'] == s]
           for s in ('system', 'keep')}
    out.append([m, ', '.join(num(v, ',.0f') for v in ips['system']),
                ', '.join(num(v, ',.0f') for v in ips['keep']),
                num(statistics.median(ips['keep']) / statistics.median(ips['system']))])
  order = ', '.join(run['cpu_malloc'] for run in runs)
  return header('cpu_malloc_ab', f'; processes run in the order {order}') + table(
      [f"model (batch {rows[0]['batch']})", f'system malloc img/s ({len(ips["system"])} '
       'processes)', f'keep img/s ({len(ips["keep"])} processes)', 'keep / system (medians)'],
      out)


# --- CPU: bfloat16, scaling, members ------------------------------------------------------


@register
def cpu_bfloat16():
  return throughput('cpu_bfloat16', [MODEL, BATCH, TRAIN, EVAL, COMPILE])


@register
def cpu_scaling():
  rows = bench_csv('cpu_scaling')
  base = rows[0]['train_ips']
  for r in rows:
    r['vs_one'] = times(r['train_ips'] / base)
  return throughput('cpu_scaling', [('devices', 'devices', 's'), MODEL,
                                    ('global batch', 'batch', 's'), TRAIN,
                                    ('img/s per device', 'per_device_ips', ',.0f'),
                                    ('vs 1 device', 'vs_one', 's')], rows)


@register
def cpu_members():
  """members.py writes no CSV: its rows are read from cpu_members.json."""
  rows = json.loads((BENCH / 'cpu_members.json').read_text())['rows']
  for r in rows:
    r['together_vs'] = times(r['ratio'])
  return header('cpu_members') + csv_table(rows, [
      MODEL, ('members', 'members', 's'), ('together (img/s)', 'together_img_s', ',.0f'),
      ('one by one (img/s)', 'one_by_one_img_s', ',.0f'),
      ('together / one by one', 'together_vs', 's')], dash=DASH)


# --- Ballé 2017 ----------------------------------------------------------------------------


@register
def balle_levers():
  return throughput('balle_levers', [('variant', 'variant', 's'), TRAIN, EVAL, COMPILE,
                                     ('TFLOP/s', 'tflops', '.3f')])


# --- records written by steps_per_call.py and init_compile.py with --out -------------------


@register
def steps_per_call():
  """benchmarks/steps_per_call.py --out=benchmarks/results/cpu_steps_per_call."""
  name = 'cpu_steps_per_call'
  rows = bench_csv(name)
  base = rows[0]['images_per_second']
  for r in rows:
    r['vs_one'] = times(r['images_per_second'] / base)
  return throughput(name, [MODEL, BATCH, ('data', 'data', 's'),
                           ('steps per call', 'steps_per_call', 's'),
                           ('images/s', 'images_per_second', ',.0f'),
                           ('vs 1 step per call', 'vs_one', 's')], rows)


@register
def init_compile():
  """benchmarks/init_compile.py --out=benchmarks/results/cpu_init_compile."""
  name = 'cpu_init_compile'
  rows = bench_csv(name)
  for r in rows:
    r['speedup'] = times(r['default_s'] / r['init_options_s'], 1)
    r['same'] = 'yes' if r['bit_identical'] is True else 'NO'
  return throughput(name, [('config', 'config', 's'), MODEL, ('parameters', 'parameters', ','),
                           ('XLA default s', 'default_s', '.1f'),
                           ('INIT_OPTIONS s', 'init_options_s', '.1f'),
                           ('speed-up', 'speedup', 's'), ('bit-identical', 'same', 's')], rows)


# --- where the device saturates, where a step's time goes, a study's wall time --------------


@register
def cpu_xeon_saturation():
  """benchmarks/saturation.py --out=benchmarks/results/cpu_xeon_saturation."""
  name = 'cpu_xeon_saturation'
  record = json.loads((BENCH / f'{name}.json').read_text())
  rows = bench_csv(name)
  for r in rows:
    r['vs_first'] = times(r['vs_first_row'])
    r['gflop'] = r['flops_per_step'] / 1e9
  return (header(name) + csv_table(rows, [
      MODEL, ('table', 'table', 's'), ('batch per member', 'batch', 's'),
      ('members', 'members', 's'), ('images per step', 'images_per_step', ','), TRAIN,
      ('vs first row of its table', 'vs_first', 's'), ('GFLOP per step', 'gflop', '.1f'),
      ('TFLOP/s', 'tflops', '.3f'), ('of peak', 'peak_fraction', '.1%')], dash=DASH) +
          f"\nOf peak: {record['peak_source']}.\n")


@register
def cpu_xeon_profile():
  """benchmarks/profile_step.py --out=benchmarks/results/cpu_xeon_profile."""
  name = 'cpu_xeon_profile'
  rows = bench_csv(name)
  for r in rows:
    r['diff'] = None if missing(r.get('torch_ms')) else f"{r['flax_ms'] - r['torch_ms']:+.1f}"
  return throughput(name, [MODEL, ('part of the step', 'part', 's'),
                           ('flax-cae ms', 'flax_ms', '.1f'),
                           ('PyTorch eager ms', 'torch_ms', '.1f'),
                           ('flax-cae - PyTorch ms', 'diff', 's')], rows)


@register
def cpu_xeon_study_time():
  """benchmarks/study_time.py --out=benchmarks/results/cpu_xeon_study_time."""
  name = 'cpu_xeon_study_time'
  rows = bench_csv(name)
  base = next((r['wall_s'] for r in rows if r['members'] == 'one by one'), None)
  for r in rows:
    r['vs'] = times(base / r['wall_s'] if base else None)
  return throughput(name, [('members', 'members', 's'), ('runs', 'runs', 's'),
                           ('train images', 'train_images', ','), ('wall s', 'wall_s', '.1f'),
                           ('training s', 'train_s', '.1f'), ('other s', 'other_s', '.1f'),
                           ('speed-up over one by one', 'vs', 's')], rows)
