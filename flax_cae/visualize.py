"""The command that draws a trained autoencoder's latent space, as Pant's "Autoencoder" report
(S4) does: t-SNE maps, interpolations and the reconstructions' snapshots
(flax_cae/evaluation/pictures.py).

  python -m flax_cae.visualize --workdir=DIR [--max_points=2000] [--out=FOLDER]
"""

from flax_cae.evaluation import pictures
from flax_cae.runtime import cli
from flax_cae.runtime import console
from flax_cae.runtime.errors import ConfigError, UserError


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  del argv
  console.setup()
  f = flags.FLAGS
  try:
    pictures.check_max_points(f.max_points)
    if not f.workdir:
      raise ConfigError('--workdir is required: the autoencoder workdir to visualize, e.g. '
                        'python -m flax_cae.visualize --workdir=workdirs/default.')
    written = pictures.visualize(f.workdir, f.max_points, f.data_dir, f.out)
  except UserError as e:
    cli.fail(str(e))
  for name, path in written.items():
    print(f'{name}: {path}')


if __name__ == '__main__':
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'An autoencoder workdir (finished, or training now: '
                      'its best checkpoint so far).')
  flags.DEFINE_integer('max_points', 2000, 'Test images in the t-SNE maps (at least 5).')
  flags.DEFINE_string('data_dir', '', "Where the data set is prepared, if not the run's.")
  flags.DEFINE_string('out', '', 'Where the pictures go (default: WORKDIR/visualize).')
  app.run(main, flags_parser=cli.parse_flags)
