"""Many hosts: one process per host (TPU pod slice) or per GPU node (SLURM), one program.

`initialize` must run before anything touches a JAX device. On one machine it does
nothing; with explicit flags, or where JAX recognises a multi-process cluster
(Cloud TPU pod slices, SLURM `srun`, Open MPI, Kubernetes), it starts
`jax.distributed`, after which `jax.devices()` lists every host's devices and
the training loop's mesh spans all of them.
"""

import jax
from absl import logging

MODES = ('auto', 'on', 'off')


def detected_cluster() -> tuple[str, int] | None:
  """(cluster name, process count) when JAX's own detectors find a multi-process job."""
  try:  # JAX's registry of cluster environments (not public API, hence the guard)
    from jax._src.clusters import ClusterEnv  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  for env in ClusterEnv._cluster_types:  # pylint: disable=protected-access
    try:
      if env.opt_in_only_method or not env.is_env_present():
        continue
      count = env.get_process_count()
    except Exception:  # a half-configured environment is not a cluster  # pylint: disable=broad-except
      continue
    if count and count > 1:
      return env.__name__, count
  return None


def initialize(mode: str = 'auto', coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Starts jax.distributed when asked or when a cluster is detected; True if it did.

  Args:
    mode: 'auto' (start it for explicit flags or a detected cluster), 'on' (always;
      JAX fills in what the flags leave out), 'off' (never).
    coordinator_address: host:port of process 0, reachable from every process.
    num_processes: total number of processes.
    process_id: this process's index in [0, num_processes).
  """
  if mode not in MODES:
    raise ValueError(f'--distributed must be one of {", ".join(MODES)}, got {mode!r}.')
  explicit = any(v is not None for v in (coordinator_address, num_processes, process_id))
  if mode == 'off':
    return False
  if mode == 'auto' and not explicit:
    cluster = detected_cluster()
    if cluster is None:
      return False
    logging.info('Detected a %s job with %d processes: starting jax.distributed.', *cluster)
  # CPU processes exchange gradients through gloo; GPU (NCCL) and TPU ignore this.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('jax.distributed: process %d of %d, %d local / %d global devices.',
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
