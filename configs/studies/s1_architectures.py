"""S1's architecture comparison (CIFAR-10, batch 256, Adam 1e-3, latent 256, MSE, 30
epochs): BaseCAE, ImprovedCAE, ImprovedCAE with all four skips across the bottleneck, with
S1's own skip set (1, 3, 4: their code drops enc2 by a typo), and the two encoder-internal
residual variants S1 tried (bilinear resize + zero channels; strided 1x1 conv). Skip
members pass more floats than the image holds: the table marks them "not a compression".

  python launch.py --config=configs/studies/s1_architectures.py --workdir=DIR
"""

from configs import s1
from configs.studies.common import study_config


def get_config():
  model = lambda **kw: {'model': {**s1.S1_MODELS['improved'], **kw}}
  return study_config(s1.get_s1_config('cifar10', 'improved'), 's1_architectures', {
      'base': {'model': dict(s1.S1_MODELS['base'])},
      'improved': model(),
      'improved_skip': model(skips=(1, 2, 3, 4)),
      'improved_skip_134': model(skips=(1, 3, 4)),
      'improved_res_interp': model(name='improved_cae_res_interp'),
      'improved_res_conv': model(name='improved_cae_res_conv'),
  }, evals=dict(pca={}))
