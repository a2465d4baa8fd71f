"""XLA's compiler options per backend, and how many steps one device call runs: the
measured settings every compiled program of the package uses
(docs/performance.md gives the measurements)."""

import functools

import flax.linen as nn
import jax
from absl import logging

from flax_cae.runtime import errors


# Steps per device call when config.steps_per_call is 0 ("auto"). On XLA's CPU backend
# a scanned step loses the fast convolution path (docs/performance.md: ~10x slower), so CPU
# runs one step per call; on GPU/TPU many steps per call remove per-step dispatch.
DEFAULT_STEPS_PER_CALL = {'cpu': 1, 'gpu': 16, 'tpu': 16}


# config.cpu_convolutions: the XLA options of every compiled step on the CPU backend. XLA
# hands convolutions to YNNPACK by default (jax 0.10); for these models Eigen's convolutions
# measured faster on the project's CPU (docs/speed.md: cpu_levers), so 'eigen' keeps
# only dots and reductions on YNNPACK. 'xla' leaves XLA's own choice.
CPU_CONVOLUTIONS = {
    'eigen': {'xla_cpu_experimental_ynn_fusion_type':
              'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'},
    'xla': None,
}


@functools.lru_cache
def _compiles_with(options: tuple) -> bool:
  try:
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(1.0).compile()
    return True
  except jax.errors.JaxRuntimeError as e:  # an XLA that no longer knows the option
    logging.warning('XLA rejected the CPU options %s (%s); using its defaults.', options, e)
    return False


def cpu_convolution_options(config) -> dict | None:
  name = config.get('cpu_convolutions', 'eigen')
  if name not in CPU_CONVOLUTIONS:
    raise errors.unknown_name('cpu_convolutions', name, CPU_CONVOLUTIONS)
  return CPU_CONVOLUTIONS[name]


def _on_cpu(options: dict | None) -> dict | None:
  """options where the backend is the CPU and its XLA accepts them, else None (defaults)."""
  if jax.default_backend() != 'cpu' or not options:
    return None
  return options if _compiles_with(tuple(options.items())) else None


def compiler_options(config) -> dict | None:
  """XLA options for the compiled steps of this backend (see CPU_CONVOLUTIONS)."""
  return _on_cpu(cpu_convolution_options(config))


# The XLA options of the CPU's initialisation programs. At XLA's default LLVM level (3) the
# random initialisers (threefry + erf_inv, one program per parameter) took most of a run's
# start: 7.9 s for configs/default.py's ImprovedCAE on a 2-core AVX2 EPYC, 2.2 s at level 1,
# with bit-identical parameters and optimizer state (tests/training/test_loop.py checks this;
# benchmarks/init_compile.py measures it). Init runs once, so its code's speed is moot.
INIT_OPTIONS = {'xla_backend_optimization_level': 1}


def init_compiler_options() -> dict | None:
  """INIT_OPTIONS on the CPU backend (if its XLA accepts them), else XLA's defaults."""
  return _on_cpu(INIT_OPTIONS)


def init_variables(module: nn.Module, rngs, *args, **kwargs):
  """module.init(rngs, *args, **kwargs), compiled with init_compiler_options()."""
  return jax.jit(functools.partial(module.init, **kwargs),
                 compiler_options=init_compiler_options())(rngs, *args)
