"""Images to bytes and back: the stream format of a quantized code (bitstream.py: per-channel
quantizer, probability tables, range coder) and its container (container.py: the .fcae
stream, whose header names the model that wrote it), a trained model's entropy model
(entropy.py: fitted at the end of its run, measured in bytes), the classical codecs JPEG and WebP
(classical.py), and rate-distortion curves and BD-rates (rate_distortion.py). The learned
codec itself, Balle et al. 2017, is a model: flax_cae/models/balle2017.py.

May import: flax_cae.runtime, flax_cae.measures, flax_cae.models, flax_cae.data.
"""
