"""What a run prints on a terminal: a progress bar (tested through a real pseudo-terminal),
short log lines, and absl's own lines back at --verbosity=1."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

from launching import ROOT, env, tiny_flags


def _run(flags, terminal: bool) -> str:
  if not terminal:
    proc = subprocess.run([sys.executable, 'launch.py', *flags], cwd=ROOT, env=env(1),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr + proc.stdout
  main, child = pty.openpty()
  fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 160, 0, 0))  # 160 columns
  proc = subprocess.Popen([sys.executable, 'launch.py', *flags], cwd=ROOT,
                          env=env(1), stdin=child, stdout=child,
                          stderr=child, close_fds=True)
  os.close(child)
  out = b''
  while True:  # read until the child closes the terminal (EIO) or exits
    ready, _, _ = select.select([main], [], [], 1.0)
    if ready:
      try:
        chunk = os.read(main, 65536)
      except OSError:
        break
      if not chunk:
        break
      out += chunk
    elif proc.poll() is not None:
      break
  os.close(main)
  assert proc.wait(timeout=600) == 0, out[-3000:]
  return out.decode(errors='replace')


def test_a_terminal_shows_a_progress_bar_and_short_lines(tmp_path):
  flags = tiny_flags(str(tmp_path / 'tfds'), str(tmp_path / 'run'), num_epochs=3,
                     log_every_seconds=0.0)
  out = _run(flags, terminal=True)
  assert re.search(r'12/12 steps 100% \|.*\| epoch 3/3 loss [\d.]+ lr [\d.e+-]+ \d+ img/s', out), out
  assert re.search(r'\d\d:\d\d:\d\d epoch 3 step 12 validation: ', out), out
  assert 'Unable to initialize backend' not in out
  assert not re.search(r'step \d+/12 epoch', out)  # the bar, not the plain lines
  assert '| improved_cae | lfw_subset |' in out


def test_verbosity_brings_back_absls_lines(tmp_path):
  flags = tiny_flags(str(tmp_path / 'tfds'), str(tmp_path / 'run'), num_epochs=1)
  out = _run(flags + ['--verbosity=1'], terminal=False)
  assert re.search(r'^I\d{4} [\d:.]+ +\d+ run\.py:\d+\] bottleneck: ', out, re.M), out[-2000:]
  assert 'step 4/4 epoch 1/1' in out and not re.search(r'\d+/\d+ steps', out)
