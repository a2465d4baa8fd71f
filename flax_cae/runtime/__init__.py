"""The machinery every part of flax-cae runs on, and nothing of the science: errors and
their one-sentence messages (errors, cli), the workdir contract (workdir), orbax checkpoints
(checkpoint), SIGTERM and Ctrl-C (preemption), many hosts (distributed), the machine and its
XLA options (machine, xla, host_memory), random streams (streams) and the writers of
metrics, TensorBoard and PNG files (writers).

May import: nothing else of flax_cae. Everything else may import it.
"""
