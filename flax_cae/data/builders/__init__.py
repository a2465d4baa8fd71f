"""TFDS builders that prepare flax-cae's data sets without TensorFlow.

One module per data set, each holding its TFDS builder: mnist.py (MNIST and
Colored MNIST), cifar10.py, cinic10.py, image_folder.py (any ROOT/<class>/<image>
tree) and lfw.py (LFW and scikit-image's LFW subset). The machinery they share
(the FlaxCaeBuilder base class, source files, image decoding) is in base.py; the
streaming tar reader is in archives.py. Modules here import only flax_cae.runtime
(e.g. flax_cae.runtime.errors) and each other.

Every builder writes `array_record` files holding {'image': uint8 [H, W, C],
'label': int}. Images are stored as raw bytes (`tfds.features.Tensor` with
`encoding='bytes'`): `tfds.features.Image` needs TensorFlow to encode, and raw
bytes serialize ~10x faster and take half the space of TFDS's default int64
lists. TFDS orders the stored examples by a hash of their keys, so the order is
deterministic, independent of the order files were read in, and mixes classes
(which is what lets sources.py carve validation splits off the end).

The builders skip TFDS's global registry (`skip_registration=True`): their
names (`flax_cae_*`) never clash with TFDS's own `mnist`/`cifar10`, and
re-importing this module never fails on a duplicate name.

Each builder takes `source_dir`, a local folder holding the official files; left
out, TFDS's download manager fetches them from the official URLs.
"""

from flax_cae.data.builders.archives import iter_tar_files
from flax_cae.data.builders.base import (FlaxCaeBuilder, SourceFile, _ClassProperty,
                                         decode_image, missing_files_error, ordered_map)
from flax_cae.data.builders.cifar10 import CIFAR10_CLASSES, CIFAR10_URL, Cifar10
from flax_cae.data.builders.cinic10 import CINIC10_URL, Cinic10
from flax_cae.data.builders.image_folder import (IMAGE_EXTENSIONS, ImageFolder, ImageFolderConfig,
                                                 class_folders, image_files, image_folder_config)
from flax_cae.data.builders.lfw import (LFW_FACE_BOX, LFW_URL, Lfw, LfwConfig, LfwSubset,
                                        lfw_config, tfds_lfw_dir)
from flax_cae.data.builders.mnist import MNIST_URL, ColoredMnist, Mnist, read_idx

__all__ = [
    'CIFAR10_CLASSES', 'CIFAR10_URL', 'CINIC10_URL', 'IMAGE_EXTENSIONS', 'LFW_FACE_BOX', 'LFW_URL',
    'MNIST_URL', 'Cifar10', 'Cinic10', 'ColoredMnist', 'FlaxCaeBuilder', 'ImageFolder',
    'ImageFolderConfig', 'Lfw', 'LfwConfig', 'LfwSubset', 'Mnist', 'SourceFile', 'class_folders',
    'decode_image', 'image_files', 'image_folder_config', 'iter_tar_files', 'lfw_config',
    'missing_files_error', 'ordered_map', 'read_idx', 'tfds_lfw_dir',
    '_ClassProperty',  # tests give a TFDS builder of their own the same code_path fix
]
