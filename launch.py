"""Trains and evaluates one config: python launch.py --config=configs/X.py --workdir=DIR.

A study config (configs/studies/) trains every member of the study and writes its
tables and figures (flax_cae/studies/).

Bad input (a config, data set or workdir problem) ends with one sentence on stderr
and exit status 2; --debug shows the full traceback instead.
"""

import os
import sys

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from flax_cae.runtime import cli
from flax_cae.runtime import console
from flax_cae.runtime import distributed
from flax_cae.runtime import host_memory
from flax_cae.runtime import preemption
from flax_cae.runtime import writers
from flax_cae import studies as study
from flax_cae.training import loop as train
from flax_cae.runtime.errors import UserError, write_failure

# --config.study.members.NAME.FIELD=VALUE may set a field the member's overrides lack, which
# ml_collections would refuse: taken out of the command line here, applied in main().
MEMBER_FLAGS = cli.take_member_flags(sys.argv)

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and pictures go.', required=True)
flags.DEFINE_bool('debug', False, 'Show full tracebacks for configuration and data errors.')
# Many hosts (README "Many hosts"): explicit flags, or auto-detected TPU pods and SLURM jobs.
flags.DEFINE_enum('distributed', 'auto', distributed.MODES,
                  'Start jax.distributed: auto = when the flags below are given or JAX detects '
                  'a multi-process cluster; on = always; off = never.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (many hosts).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (many hosts).')
flags.DEFINE_integer('process_id', None, "This process's index, 0 .. num_processes - 1.")


_fail = cli.fail


def summary(workdir: str, name: str = 'results.md') -> str:
  """The end of a run or study on the terminal: the first table of its results.md (study.md)
  and where everything is."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  path = os.path.join(workdir, name)
  with open(path) as f:
    lines = f.read().splitlines()
  start = next((i for i, line in enumerate(lines) if line.startswith('|')), len(lines))
  end = next((i for i in range(start, len(lines)) if not lines[i].startswith('|')), len(lines))
  where = ('every figure: results.json beside it); checkpoints, metrics and pictures: '
           if name == 'results.md' else 'with study.csv and the figures); members\' runs: ')
  return '\n'.join(['', *lines[start:end], '', f'Results: {path} ({where}{workdir}.'])


# Loading a config runs the file's own code: whatever it raises (a missing module, an error in
# get_config, a file that is not Python) is reported in one sentence.
CONFIG_ERRORS = (Exception,)


def _unknown_field(e: Exception) -> str | None:
  """The --config.* flag that names a field the config lacks (ml_collections raises
  AttributeError or KeyError with the bare name), if one does."""
  if not isinstance(e, (AttributeError, KeyError)):
    return None
  name = str(e).strip('\'"')
  for arg in sys.argv[1:]:
    path = arg.split('=', 1)[0]
    if path.startswith('--config.') and name in path.split('.')[1:]:
      return path
  return None


def _config_error(e: Exception):
  flag = _unknown_field(e)
  if flag:
    name = str(e).strip('\'"')
    _fail(f'{flag}: {name!r} is not a field of the config; check the spelling against the '
          '--config file (and configs/default.py, where every field is listed).')
  if isinstance(e, SyntaxError):
    what = f'{e.msg} at {e.filename}, line {e.lineno}'
  else:
    what = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").strip(' \'"').split())
  _fail(f'the config could not be loaded ({type(e).__name__}: {what[:400]}); check the '
        '--config path, the file\'s syntax and the --config.* field names.')


def _parse_flags(argv):
  """absl's parser, but a config file that is missing or broken is one sentence, status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    if isinstance(e, flags.IllegalFlagValueError) and str(e).startswith('flag --config.'):
      try:  # a --config.* value of the wrong type: said in the field's terms
        config = FLAGS['config'].value
      except Exception:  # pylint: disable=broad-except
        config = None
      _fail(cli.explain_flag_error(e, cli.config_lookup(config)))
    cause = e.__cause__ or e.__context__  # e.g. "Error whilst parsing config file:" alone
    last = ([l.strip() for l in str(cause).splitlines() if l.strip()] or [''])[-1]
    reason = f' ({type(cause).__name__}: {last[:300]})' if cause and str(cause) not in str(e) else ''
    _fail(cli.explain_flag_error(e) + reason)
  except CONFIG_ERRORS as e:
    if '--debug' in argv:
      raise
    _config_error(e)


try:
  # ml_collections loads the default config and checks --config.* names right here.
  config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file (a get_config()).')
except CONFIG_ERRORS as err:
  if '--debug' in sys.argv:
    raise
  _config_error(err)


def main(argv):
  del argv
  console.setup()  # short log lines (--verbosity=1: absl's), a progress bar on a terminal
  preemption.install()  # SIGTERM ends the process within seconds, whatever it is doing
  try:
    config = FLAGS.config  # --config.* overrides are applied here
    if config is None:
      _fail('get_config() in the --config file returned None; return an '
            'ml_collections.ConfigDict (start from configs/default.py).')
    # ml_collections (1.1) hands back a stand-in for a config file that failed to load,
    # which raises only when used: use it here, where the error is caught.
    config.keys()
    if isinstance(config, ml_collections.ConfigDict):
      cli.apply_member_flags(config, MEMBER_FLAGS)
  except UserError as e:
    if FLAGS.debug:
      raise
    _fail(str(e))
  except CONFIG_ERRORS as e:
    if FLAGS.debug:
      raise
    _config_error(e)
  if not isinstance(config, ml_collections.ConfigDict):
    _fail(f'get_config() in the --config file returned a {type(config).__name__}, not an '
          'ml_collections.ConfigDict; return one (start from configs/default.py: import it, '
          'change its fields, return it).')
  try:  # before JAX starts: XLA's threads pick their malloc arena on first use
    logging.debug('Host memory: %s.', host_memory.configure(config.get('cpu_malloc', 'keep')))
  except UserError as e:
    if FLAGS.debug:
      raise
    _fail(str(e))
  try:
    distributed.initialize(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id)
  except (ValueError, RuntimeError) as e:  # JAX's own messages; they name the missing piece
    if FLAGS.debug:
      raise
    _fail(f'jax.distributed could not start ({" ".join(str(e).split())[:300]}); give all of '
          '--coordinator_address, --num_processes and --process_id, or none on one machine.')
  try:
    if study.is_study(config):  # configs/studies/: every member, then the tables and figures
      done = study.run_study(config, FLAGS.workdir)
      if writers.is_writer() and not done.get('preempted'):
        print(summary(FLAGS.workdir, 'study.md'), flush=True)
    else:
      result = train.train_and_evaluate(config, FLAGS.workdir)
      if writers.is_writer() and not result.get('preempted'):
        print(summary(FLAGS.workdir), flush=True)
  except UserError as e:
    if FLAGS.debug:
      raise
    logging.flush()
    _fail(str(e))
  except OSError as e:  # a metrics, results or picture file on a full disk
    if FLAGS.debug or write_failure(e) is None:
      raise
    logging.flush()
    _fail(f'{e.filename or "a file"} could not be written ({write_failure(e)}); free disk space '
          '(or fix the folder\'s permissions) and run the same command: checkpoints written so '
          'far are kept and the run resumes from them.')
  except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop
    if FLAGS.debug:
      raise
    logging.flush()
    sys.stderr.write('flax-cae: interrupted; checkpoints written so far are kept: run the same '
                     'command to resume.\n')
    sys.exit(130)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
