"""The command that scores an autoencoder as "Implementation of Convolutional Autoencoder and
Learnings on Image Compression" (S2) does: a classifier's accuracy on its reconstructions
against the originals (flax_cae/evaluation/trained.py).

  python -m flax_cae.evaluate --workdir=AE_DIR --classifier=CLASSIFIER_DIR [--out=FOLDER]
"""

from flax_cae.evaluation import trained
from flax_cae.runtime import cli
from flax_cae.runtime import console
from flax_cae.runtime.errors import ConfigError, UserError


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  console.setup()
  f = flags.FLAGS
  try:
    for name, what in (('workdir', 'the autoencoder workdir'),
                       ('classifier', 'the workdir of a classifier trained on the same data '
                        '(e.g. with configs/cifar10_lenet5.py)')):
      if not f[name].value:
        raise ConfigError(f'--{name} is required: {what}; e.g. python -m flax_cae.evaluate '
                          '--workdir=AE_DIR --classifier=CLASSIFIER_DIR.')
    out = trained.evaluate(f.workdir, f.classifier, f.data_dir, f.out)
  except UserError as e:
    cli.fail(str(e))
  print(trained.markdown(out), end='')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'An autoencoder workdir (finished, or training now: its '
                      'best checkpoint so far).')
  flags.DEFINE_string('classifier', None, 'A classifier workdir.')
  flags.DEFINE_string('data_dir', '', "Where the data set is prepared, if not the autoencoder's "
                      'data.data_dir.')
  flags.DEFINE_string('out', '', 'Where classifier_eval.json and .md go (default: --workdir).')
  app.run(main, flags_parser=cli.parse_flags)
