"""The one training loop for every model (loop.py), and its parts: the compiled steps
(trainer.py), what a model is trained to produce (tasks.py), optimizers and schedules
(optim.py), augmentation (augment.py), building and resuming a run (run.py), what is
refused before anything is written (checks.py), what a resume may change (resume.py) and
the entropy model fitted at the end of a run of a model that compresses (entropy_fit.py).

May import: flax_cae.codec, flax_cae.runtime, flax_cae.measures, flax_cae.models, flax_cae.data.
"""
