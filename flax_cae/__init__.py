"""flax-cae: fast convolutional autoencoders in JAX/Flax."""
