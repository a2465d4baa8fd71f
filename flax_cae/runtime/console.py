"""What the commands print: short log lines, a progress bar on a terminal, no false alarms.

- Log lines are `HH:MM:SS message` (warnings and errors say so first). `--verbosity=1` (or
  more) keeps absl's own lines instead: level, date, thread and file:line before each.
- What is not about the user's setup is left out: JAX's note that it found no TPU (it looks
  for one on every machine) and TFDS's notes on reading and writing its own files.
- Training shows a progress bar (steps, epoch, loss, images/s, time left) when stderr is a
  terminal; elsewhere (CI, SLURM, a pipe, a file) the same figures are plain log lines every
  `log_every_seconds`. Other log lines print above the bar.
"""

import logging as std_logging
import sys
import time

from absl import flags
from absl import logging

_state = {'bar': None, 'short': False}
# Records dropped at INFO (warnings always show): (logger name prefix or file path part, text).
_QUIET = (('jax._src.xla_bridge', 'Unable to initialize backend'),
          ('tensorflow_datasets', ''))


class _Short(std_logging.Formatter):

  def format(self, record):
    text = record.getMessage()
    if record.exc_info:
      text += '\n' + self.formatException(record.exc_info)
    level = '' if record.levelno < std_logging.WARNING else record.levelname.lower() + ': '
    return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{text}"


class _Console(std_logging.Handler):
  """Writes to stderr, above the progress bar while one is shown."""

  def emit(self, record):
    if record.levelno < std_logging.WARNING and any(
        (record.name.startswith(name) or name in record.pathname) and text in record.getMessage()
        for name, text in _QUIET):
      return
    try:
      line = self.format(record)
      if _state['bar'] is not None:
        _state['bar'].write(line, file=sys.stderr)
      else:
        sys.stderr.write(line + '\n')
        sys.stderr.flush()
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def setup():
  """Short log lines on stderr, unless --verbosity asks for absl's. Call in main()."""
  verbosity = flags.FLAGS['verbosity'].value if 'verbosity' in flags.FLAGS else 0
  if verbosity >= 1 or _state['short']:
    return
  root = std_logging.getLogger()
  root.removeHandler(logging.get_absl_handler())
  handler = _Console()
  handler.setFormatter(_Short())
  root.addHandler(handler)
  _state['short'] = True


class _NoBar:
  def update_to(self, step, status=None):
    del step, status

  def close(self):
    pass


class _Bar:
  """tqdm over the run's steps; `status` (epoch, loss, images/s, time left) beside it."""

  def __init__(self, total: int, initial: int):
    import tqdm  # pylint: disable=g-import-not-at-top
    self.tqdm = tqdm.tqdm(total=total, initial=initial, file=sys.stderr, mininterval=0.5,
                          bar_format='{n_fmt}/{total_fmt} steps {percentage:3.0f}% |{bar:24}| '
                          '{desc}')
    _state['bar'] = self.tqdm

  def update_to(self, step: int, status: str | None = None):
    if status is not None:
      self.tqdm.set_description_str(status, refresh=False)
    self.tqdm.update(step - self.tqdm.n)

  def close(self):
    _state['bar'] = None
    self.tqdm.close()


def progress(total: int, initial: int, show: bool = True):
  """A progress bar where stderr is a terminal, the short log lines are on and `show` (the
  process that writes); otherwise one that does nothing (log lines carry the figures)."""
  if show and _state['short'] and sys.stderr.isatty():
    return _Bar(total, initial)
  return _NoBar()


def showing_progress() -> bool:
  return _state['bar'] is not None
