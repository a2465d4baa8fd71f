"""The data sets and how they reach the devices: one TFDS builder per data set, read
without TensorFlow (builders/), preparing and opening them (sources.py), the device-resident
or streamed input pipeline (pipeline.py), and the denoising corruptions drawn on the device
(noise.py).

May import: flax_cae.runtime.
"""
