"""Judging trained models: loading a workdir read-only and scoring it, also with a classifier
(trained.py), the pictures of a latent space (pictures.py), and the classical baselines
scored beside the learned models: PCA (pca.py) and non-local means (nl_means.py). The
commands `python -m flax_cae.evaluate` and `python -m flax_cae.visualize` run them.

May import: flax_cae.runtime, flax_cae.measures, flax_cae.models, flax_cae.data,
flax_cae.training, flax_cae.codec.
"""
