"""Running launch.py as real subprocesses: one or many processes, each with n CPU devices."""

import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tests/training/test_loop.py's tiny_config, as launch.py flags.
TINY = {
    'data.download': False, 'model.latent_dim': 16, 'model.widths': '(8,8,16,16)',
    'model.dropout_rate': 0.1, 'batch_size': 40, 'eval_batch_size': 8, 'num_epochs': 2,
    'eval_every_epochs': 1, 'checkpoint_every_epochs': 1, 'log_every_seconds': 0.0,
    'num_sample_images': 4,
}


def tiny_flags(data_dir: str, workdir: str, **overrides) -> list[str]:
  values = {**TINY, 'data.data_dir': data_dir, **overrides}
  return ['--config=configs/default.py', f'--workdir={workdir}',
          *(f'--config.{k}={v}' for k, v in values.items())]


def env(n_devices: int) -> dict:
  e = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES=str(n_devices))
  e.pop('XLA_FLAGS', None)  # its forced device count would override ours
  return e


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(flags: list[str], n_devices: int = 1, log_path: str | None = None) -> subprocess.Popen:
  """launch.py in a new process; stdout and stderr go to log_path (or a pipe)."""
  out = open(log_path, 'w') if log_path else subprocess.PIPE  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, 'launch.py', *flags], cwd=ROOT, env=env(n_devices),
                          stdout=out, stderr=subprocess.STDOUT, text=True)


def run_processes(flags: list[str], n_processes: int, n_devices: int, log_dir: str,
                  timeout: float = 300) -> list[str]:
  """n_processes x n_devices on localhost (gloo collectives); returns each process's log."""
  port = free_port()
  procs, logs = [], []
  for i in range(n_processes):
    extra = ([f'--coordinator_address=localhost:{port}', f'--num_processes={n_processes}',
              f'--process_id={i}'] if n_processes > 1 else [])
    logs.append(os.path.join(log_dir, f'process_{i}.log'))
    procs.append(start(flags + extra, n_devices, logs[-1]))
  try:
    codes = [p.wait(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  texts = [open(path).read() for path in logs]
  for code, text in zip(codes, texts):
    assert code == 0, text[-3000:]
  return texts


def tiny_run(root, name: str = 'run', **overrides) -> str:
  """The workdir root/name of a finished 1-epoch run of the tiny default (and `overrides`),
  its data prepared in root/tfds."""
  workdir = os.path.join(str(root), name)
  proc = start(tiny_flags(os.path.join(str(root), 'tfds'), workdir,
                          **{'num_epochs': 1, **overrides}))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == 0, out[-3000:]
  return workdir


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module args` from the repository root, on one CPU device."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env(1),
                        capture_output=True, text=True, timeout=600)
