"""Trains and evaluates one config: python launch.py --config=configs/X.py --workdir=DIR."""

from absl import app, flags
from ml_collections import config_flags

from flax_cae import train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/default.py', 'Config file (a get_config()).')
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and pictures go.', required=True)


def main(argv):
  del argv
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
