"""How two images are compared: the metrics every table reports (PSNR, SSIM, SNR, MSE, L1;
metrics.py) and the training losses built on them (losses.py).

May import: flax_cae.runtime.
"""
