"""The benchmarks run (at a tiny size): they prove they work, they assert no speed."""

import json
import os
import subprocess
import sys
import time

import pytest

import data_fixtures

# End-to-end runs that take the default suite past CI's 15 minutes (README: -m slow).
pytestmark = pytest.mark.slow


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


TINY = ['--batch_sizes=8', '--steps=2', '--rounds=2', '--n=64', '--image=16,16,1']


def run_benchmark_script(script, *flags):
  proc = subprocess.run([sys.executable, f'benchmarks/{script}', *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=900,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def run_benchmark(*flags):
  return run_benchmark_script('throughput.py', *TINY, *flags)


def test_throughput_covers_every_registered_model(tmp_path):
  out = run_benchmark('--dtypes=float32', '--torch=none', '--epoch_images=64',
                      f'--out={tmp_path / "t"}')
  rows = json.loads((tmp_path / 't.json').read_text())['rows']
  from flax_cae import models  # pylint: disable=g-import-not-at-top
  expected = set(models.autoencoder_names()) | {n + '+skips' for n, s in models.MODELS.items()
                                                if s.allows_skips}
  assert {r['model'] for r in rows} == expected
  assert {r['dtype'] for r in rows} == {'float32'}
  for r in rows:
    assert r['train_ips'] > 0 and r['eval_ips'] > 0 and r['compile_s'] > 0 and r['epoch_s'] > 0
    assert r['tflops'] > 0  # XLA's cost analysis gave a FLOP count
  md = (tmp_path / 't.md').read_text()
  assert md.startswith('Training throughput: ') and 'jax 0.' in md and 'commit ' in md
  assert md.count('\n| ') == len(rows) + 1
  assert (tmp_path / 't.csv').read_text().count('\n') == len(rows) + 1
  assert '| train img/s |' in out


def test_throughput_against_pytorch_times_the_models_with_a_pytorch_copy(monkeypatch):
  monkeypatch.syspath_prepend(os.path.join(ROOT, 'benchmarks'))
  import throughput  # pylint: disable=import-outside-toplevel
  from flax_cae import models  # pylint: disable=import-outside-toplevel
  mirrored = throughput.models_to_time('', ['eager'])
  assert mirrored == {'base_cae', 'cae', 'improved_cae', 'improved_cae+skips'}
  assert all(models.MODELS[m.split('+')[0]].torch_mirror for m in mirrored)
  assert throughput.models_to_time('', []) is None  # flax-cae alone: every model
  assert throughput.models_to_time('res_cae', ['eager']) == {'res_cae'}  # as asked


def test_throughput_compares_variants_of_one_model(tmp_path):
  variants = 'default,model.transposed_conv=dilated+model.conv_input_grad=xla+cpu_convolutions=xla'
  run_benchmark('--models=base_cae', '--dtypes=float32', '--torch=none', '--epoch_images=0',
                f'--variants={variants}', f'--out={tmp_path / "v"}')
  rows = json.loads((tmp_path / 'v.json').read_text())['rows']
  assert [r['variant'] for r in rows] == variants.split(',')
  assert all(r['train_ips'] > 0 for r in rows)
  proc = subprocess.run([sys.executable, 'benchmarks/throughput.py', '--variants=model.name=cae'],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "'model.name=cae' is not KEY=VALUE" in proc.stderr


def test_throughput_against_pytorch_in_the_same_run(tmp_path):
  pytest.importorskip('torch', reason="PyTorch not installed: pip install -e '.[bench]'")
  run_benchmark('--models=improved_cae', '--dtypes=float32', '--torch=eager,resident',
                '--epoch_images=0', f'--out={tmp_path / "t"}')
  rows = json.loads((tmp_path / 't.json').read_text())['rows']
  assert len(rows) == 2  # improved_cae with and without skips
  for r in rows:
    for loop in ('eager', 'resident'):  # the DataLoader loop and the device-resident one
      assert r[f'torch_{loop}_ips'] > 0 and len(r['train_ips_rounds'][loop]) == 2
      assert r[f'vs_torch_{loop}'] == pytest.approx(r['train_ips'] / r[f'torch_{loop}_ips'])
    assert r['same_function_max_diff'] < 1e-4 and r['params'] > 0
  md = (tmp_path / 't.md').read_text()
  assert 'parameters on both sides' in md and '| flax-cae / PyTorch resident |' in md
  assert "resident loop compiled with mode 'default'" in md  # CUDA graphs only on a GPU


def test_the_resident_pytorch_loop_trains(monkeypatch):
  torch = pytest.importorskip('torch', reason="PyTorch not installed: pip install -e '.[bench]'")
  monkeypatch.syspath_prepend(os.path.join(ROOT, 'benchmarks'))
  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch_reference as tr  # pylint: disable=import-outside-toplevel
  from flax_cae import models  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
  opts = models.build_model(ml_collections.ConfigDict(dict(name='base_cae')), (16, 16, 3)).opts
  torch.manual_seed(0)
  net = tr.TorchAutoencoder('base_cae', opts)
  before = [p.detach().clone() for p in net.parameters()]
  run = tr.resident_timer(net, images, batch=8, warmup=2)
  assert run(10) > 0  # 12 steps: more than one epoch of 8, so a second permutation was drawn
  assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
  second = net.encoder['Conv_1'].weight  # 16 input channels: the layouts differ
  assert second.is_contiguous(memory_format=torch.channels_last) and not second.is_contiguous()
  assert net.training


def test_study_time_times_a_study_both_ways(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'benchmarks/study_time.py', '--images=100', '--epochs=1',
       f'--out={tmp_path / "st"}', '--config.study.only=adam', '--config.batch_size=16',
       '--config.eval_batch_size=16'],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = json.loads((tmp_path / 'st.json').read_text())['rows']
  assert [r['members'] for r in rows] == ['together', 'one by one']
  for r in rows:
    assert r['runs'] == 4  # adam's three tuning runs and the member
    assert 0 < r['train_s'] < r['wall_s'] and r['other_s'] == pytest.approx(
        r['wall_s'] - r['train_s'])
  assert 'vector extensions: ' in (tmp_path / 'st.md').read_text()
  bad = subprocess.run([sys.executable, 'benchmarks/study_time.py', '--study=nope'], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode != 0 and 'there is no configs/studies/nope.py' in bad.stderr


SATURATION_TINY = ['--batch_sizes=8,16', '--members=1,2', '--member_batch=8', '--steps=2',
                   '--rounds=1', '--image=16,16,1', '--matmul=64']


def test_saturation_scales_batch_and_members(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'benchmarks/saturation.py', '--models=base_cae', *SATURATION_TINY,
       f'--out={tmp_path / "sat"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  record = json.loads((tmp_path / 'sat.json').read_text())
  rows = record['rows']
  batch = [r for r in rows if r['table'] == 'batch']
  members = [r for r in rows if r['table'] == 'members']
  assert [(r['batch'], r['members']) for r in batch] == [(8, 1), (16, 1)]
  assert [(r['batch'], r['members']) for r in members] == [(8, 1), (8, 2)]
  assert members[1]['images_per_step'] == 2 * members[0]['images_per_step'] == 16
  # One vmapped program of two members: about twice one member's work per step.
  assert members[1]['flops_per_step'] == pytest.approx(2 * members[0]['flops_per_step'], rel=0.1)
  assert 0 < batch[0]['flops_per_step'] < batch[1]['flops_per_step']
  for r in rows:
    assert r['model'] == 'base_cae' and 0 < r['train_ips'] < float('inf')
    assert len(r['train_ips_rounds']) == 1 and r['peak_fraction'] > 0
  assert batch[0]['vs_first_row'] == members[0]['vs_first_row'] == 1.0
  # A CPU has no data-sheet peak: the one measured in this run, said so in the table.
  assert record['peak'] > 0 and record['flops_counted'] == 'one-step compile'
  assert record['peak_source'].startswith("XLA's float32 matmul, measured in this run")
  md = (tmp_path / 'sat.md').read_text()
  assert md.startswith('Saturation: ') and 'vector extensions: ' in md
  assert "Of peak: XLA's float32 matmul, measured in this run" in md
  assert md.count('| 8 | 2 | 16 |') == 1
  assert md.count('\n| ') == len(rows) + 2  # two tables, each with its header line
  assert (tmp_path / 'sat.csv').read_text().count('\n') == len(rows) + 1


def test_saturation_names_the_models_it_accepts():
  proc = subprocess.run([sys.executable, 'benchmarks/saturation.py', '--models=nope'], cwd=ROOT,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode != 0
  assert "'nope' is neither a registered model (" in proc.stderr, proc.stderr[-2000:]
  assert 'improved_cae' in proc.stderr and 'cifar10_best256' in proc.stderr


def test_flops_per_step_do_not_depend_on_steps_per_call(monkeypatch):
  # XLA's cost analysis counts a loop's body once: a call of k steps must not be divided by k.
  monkeypatch.syspath_prepend(os.path.join(ROOT, 'benchmarks'))
  import numpy as np  # pylint: disable=import-outside-toplevel
  import throughput  # pylint: disable=import-outside-toplevel
  from flax_cae.runtime import xla  # pylint: disable=import-outside-toplevel
  from flax_cae.training import loop  # pylint: disable=import-outside-toplevel
  images = np.random.default_rng(0).integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
  config = throughput.make_config('base_cae', (), 8, 'float32')
  counts = {}
  for k in (1, 4):
    monkeypatch.setitem(xla.DEFAULT_STEPS_PER_CALL, 'cpu', k)
    with loop.random_streams():
      r = throughput.bench_flax(config, images, 2, time_epoch=False)
    assert r['steps_per_call'] == k
    counts[k] = r['flops_per_step']
  assert counts[1] > 0 and counts[4] == pytest.approx(counts[1], rel=1e-3), counts


def test_scaling_runs_on_fake_devices(tmp_path):
  run_benchmark('--scaling=1,2', '--models=base_cae', f'--out={tmp_path / "s"}')
  rows = json.loads((tmp_path / 's.json').read_text())['rows']
  assert [r['devices'] for r in rows] == [1, 2]
  assert all(r['per_device_ips'] == pytest.approx(r['train_ips'] / r['devices']) for r in rows)


def test_device_run_script_runs_every_stage(tmp_path):
  """benchmarks/device_run.sh (the one-call GPU suite) at a toy size on the CPU: each stage
  runs and leaves its tables; a stage it does not know fails the run, the others still run."""
  data_fixtures.require_shared_data('cifar')  # the `best` stage trains on the CIFAR-10 JPEGs
  out = tmp_path / 'out'
  proc = subprocess.run(
      ['bash', 'benchmarks/device_run.sh', 'env', 'peer', 'smoke', 'steps', 'float32', 'bfloat16',
       'levers', 'scaling', 'members', 'saturation', 'study', 'best', 'capacity', 'rd', 'nope'],
      cwd=ROOT, capture_output=True, text=True, timeout=900,
      env=dict(os.environ, JAX_PLATFORMS='cpu', SIZE='tiny', OUT=str(out), PYTHON=sys.executable))
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = (out / 'summary.md').read_text()
  for stage in ('env', 'peer', 'smoke_tests', 'smoke_launch', 'steps', 'float32', 'bfloat16',
                'levers', 'scaling', 'members', 'saturation', 'study', 'best', 'capacity', 'rd'):
    assert f'=== {stage}: exit 0 after' in summary, summary
  assert '=== nope: exit 2, not a stage' in summary
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(out / 'results.tgz') as tar:
    names = {os.path.basename(n) for n in tar.getnames()}
    rows = json.load(tar.extractfile('./cpu_float32.json'))['rows']
    levers = json.load(tar.extractfile('./cpu_levers.json'))['rows']
    saturation = json.load(tar.extractfile('./cpu_saturation.json'))['rows']
  assert {'cpu_peer.md', 'cpu_peer.json', 'cpu_bfloat16.json', 'cpu_scaling.json',
          'cpu_float32.md', 'cpu_float32.csv', 'steps_per_call.json', 'results.md',
          'smoke_tests.log', 'cpu_members.md', 'cpu_members.json', 'cpu_saturation.md',
          'cpu_saturation.csv'} <= names
  assert [r['model'] for r in rows] == ['base_cae'] and rows[0]['epoch_s'] > 0
  assert [r['variant'] for r in levers] == [
      'default', 'model.transposed_conv=dilated', 'model.conv_input_grad=subpixel']
  assert '| data | steps per call |' in summary and (out / 'run.log').stat().st_size > 0
  # Every table names the CPU and its vector extensions (ratios move with them).
  assert summary.count('vector extensions: ') >= 3, summary
  assert '| base_cae | 2 |' in summary  # members together vs one by one
  assert [(r['table'], r['batch'], r['members']) for r in saturation] == [
      ('batch', 8, 1), ('batch', 16, 1), ('members', 8, 1), ('members', 8, 2)]
  assert 'base_cae, members trained together, batch 8 each:' in summary
  assert '| together | 4 |' in summary and '| one by one | 4 |' in summary  # the study's runs
  # best_codes: both codes, each beside PCA at its floats, on 100 real photos.
  assert '| best256 |' in summary and '| PCA (256 floats) |' in summary
  assert '| best64 |' in summary and '| PCA (64 floats) |' in summary
  assert 'capacity_study.md' in names  # best_capacity: every member beside PCA
  capacity = tar_text(out / 'results.tgz', './capacity_study.md')
  for row in ('| best256_no_blocks |', '| best256_deep |', '| best64_spatial |',
              '| PCA (256 floats) |', '| PCA (64 floats) |'):
    assert row in capacity, capacity
  # rate_distortion: the code and a Balle member in bytes beside PCA, JPEG and WebP.
  assert {'rd_rate_distortion.md', 'rd_rate_distortion.csv', 'rd_rate_distortion.png',
          'rd_study.md', 'best_study.md'} <= names
  rd_table = summary.split('# Rate-distortion')[-1]
  for row in ('| best256 | step 1 std |', '| balle2017 | lambda 0.01 |',
              '| PCA (256 floats) | step 1 std |', '| JPEG | quality 10 |', '| WebP | quality 50 |'):
    assert row in rd_table, rd_table


def test_device_run_stops_a_stage_at_its_limit_and_runs_the_next(tmp_path):
  """The first call of the device plan shares 9 minutes between its stages: a stage past
  its STAGE_LIMITS share is stopped, said so, and the next stage runs."""
  out = tmp_path / 'out'
  proc = subprocess.run(
      ['bash', 'benchmarks/device_run.sh', 'saturation', 'env'], cwd=ROOT, capture_output=True,
      text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu', SIZE='tiny', OUT=str(out), PYTHON=sys.executable,
               STAGE_LIMITS='saturation=1'))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = (out / 'summary.md').read_text()
  assert '=== saturation: stopped at its limit of 1 s, keeping the rows it wrote' in summary
  assert '=== env: exit 0 after' in summary, summary


def test_profile_step_splits_a_step_into_its_parts(tmp_path):
  """benchmarks/profile_step.py reads XLA's CPU trace of the real step: every instant the
  program ran goes to exactly one part (the parts add up to the program's time, which fits
  in the traced round), and convolutions and dense layers take some of it."""
  run_benchmark_script('profile_step.py', '--models=base_cae', '--batch=8', '--steps=2',
                       '--n=64', '--image=16,16,1', f'--out={tmp_path / "p"}')
  record = json.loads((tmp_path / 'p.json').read_text())
  ms = {r['part']: r['flax_ms'] for r in record['rows']}
  parts = ['convolutions', 'dense layers', 'layout copies', 'the rest',
           "untraced (Eigen's convolution work)"]
  assert list(ms) == parts + ['sum of the parts', 'wall (no profiler)']
  assert ms['convolutions'] + ms["untraced (Eigen's convolution work)"] > 0
  assert ms['dense layers'] > 0 and ms['wall (no profiler)'] > 0
  assert min(ms[p] for p in parts) >= 0
  check = record['checks']['base_cae']
  assert sum(ms[p] for p in parts) == pytest.approx(check['program_s'] / 2 * 1e3)
  assert 0 < check['program_s'] <= check['traced_round_s']
  md = (tmp_path / 'p.md').read_text()
  assert md.startswith('Profile of one training step: ') and '| dense layers |' in md


def test_profile_step_classes_ops_by_their_hlo():
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
  import profile_step  # pylint: disable=import-outside-toplevel
  hlo = """HloModule m

%fused_dot (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.3 = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_outer (p0: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  ROOT %inner = f32[4,4]{1,0} fusion(%p0, %p0), kind=kCustom, calls=%fused_dot
}

%fused_t (p0: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %t = f32[4,4]{0,1} transpose(%p0), dimensions={1,0}
  ROOT %c = f32[4,4]{1,0} copy(%t)
}

%fused_add (p0: f32[4,4]) -> (f32[4,4]{1,0}, f32[4,4]{1,0}) {
  %p0 = f32[4,4]{1,0} parameter(0)
  %a = f32[4,4]{1,0} add(%p0, %p0)
  ROOT %t = (f32[4,4]{1,0}, f32[4,4]{1,0}) tuple(%a, %a)
}

ENTRY %main.1 (x: f32[1,4,4,1], k: f32[3,3,1,1], y: f32[4,4]) -> f32[4,4] {
  %x = f32[1,4,4,1]{3,2,1,0} parameter(0)
  %conv.2 = f32[1,4,4,1]{3,2,1,0} convolution(%x, %k), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
  %ynn_fusion.1 = f32[4,4]{1,0} fusion(%y), kind=kCustom, calls=%fused_outer
  %odd_name = f32[4,4]{1,0} fusion(%y), kind=kLoop, calls=%fused_t
  %pair = (f32[4,4]{1,0}, f32[4,4]{1,0}) fusion(%y), kind=kLoop, calls=%fused_add
  ROOT %w = f32[4,4]{1,0} while(%y), condition=%c, body=%b
}
"""
  parts = profile_step.hlo_parts(hlo)
  assert parts['conv.2'] == 'convolutions'
  assert parts['ynn_fusion.1'] == 'dense layers'  # a dot two computations down
  assert parts['odd_name'] == 'layout copies'  # a fusion of a transpose and a copy
  assert parts['pair'] == 'the rest'
  assert 'w' not in parts  # a while's event spans its body's: not a part of its own


@pytest.mark.parametrize('stage_limits', ['', 'env=100 steps=100 float32=100 levers=100'])
def test_device_run_stopped_by_a_time_limit_still_leaves_its_summary(tmp_path, stage_limits):
  """A lent GPU's call has a time limit: device_run.sh stopped by one (here `timeout`, as
  on that machine) still writes summary.md, naming the stage it stopped, and results.tgz,
  at once, also when the stage runs under a limit of its own (in a process group of its own,
  which the call's signal does not reach by itself)."""
  out = tmp_path / 'out'
  t0 = time.monotonic()
  proc = subprocess.run(
      ['timeout', '10', 'bash', 'benchmarks/device_run.sh', 'env', 'steps', 'float32', 'levers'],
      cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu', SIZE='tiny', OUT=str(out), PYTHON=sys.executable,
               STAGE_LIMITS=stage_limits))
  assert proc.returncode == 124, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert time.monotonic() - t0 < 60  # not held until a stage's own limit of 100 s
  summary = (out / 'summary.md').read_text()
  assert ': stopped before it ended (a time limit?)' in summary, summary
  assert (out / 'results.tgz').stat().st_size > 0


def tar_text(path, name):
  import tarfile  # pylint: disable=g-import-not-at-top
  with tarfile.open(path) as tar:
    return tar.extractfile(name).read().decode()


def test_init_compile_benchmark_runs_and_finds_the_same_state():
  proc = subprocess.run(
      [sys.executable, 'benchmarks/init_compile.py', '--configs=default,balle2017', '--rounds=1',
       '--image=16,16,3'], cwd=ROOT, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = [l for l in proc.stdout.splitlines() if l.startswith('| default |') or
          l.startswith('| balle2017 |')]
  assert len(rows) == 2 and all(r.rstrip().endswith('| yes |') for r in rows), proc.stdout
