"""S1: BaseCAE on mnist (batch 256, Adam 1e-3, latent 256, MSE)."""

from configs import s1


def get_config():
  return s1.get_s1_config('mnist', 'base')
