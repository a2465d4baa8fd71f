"""Shared test set-up: the repo root on sys.path (so `configs` imports) and this folder (so
the tests in its subfolders, which mirror the package's, import `launching` and
`data_fixtures`), quiet JAX, and one JAX compilation cache for the whole suite."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))
# (and its subfolders: a few tests share another folder's helpers, e.g. test_errors.launch,
# which must import when one file is run alone)
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[2:2] = [os.path.join(_HERE, d) for d in ('codec', 'data', 'evaluation', 'measures',
                                                  'models', 'runtime', 'studies', 'training')]
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# The suite's worker processes, and every launch.py they start (they inherit this
# environment), compile the same tiny programs dozens of times; JAX's persistent cache turns
# all but the first into a read (measured: the workdir tests 155 s -> 83 s from an empty
# cache). It lives in the ignored .pytest_cache, so a fresh clone starts empty.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(ROOT, '.pytest_cache', 'jax_compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')
