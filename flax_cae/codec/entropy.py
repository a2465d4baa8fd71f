"""The entropy model of a trained autoencoder: what turns its code into bytes.

A code [..., C] is quantized channel by channel with a step of `step` x that channel's
standard deviation on the training codes (one table per step in STEPS, DEFAULT_STEP unless
asked otherwise), and the symbols are range-coded with per-channel tables counted on the
training codes (bitstream.CodeModel). A learned codec (Balle et al. 2017) rounds its code
(step 1) and codes it with its own learned density instead. Fitted at the end of every run
of a model that compresses (training/loop.py) and saved as ENTROPY_FILE in the workdir.
"""

import dataclasses
import os
import zipfile

import jax
import numpy as np

from flax_cae.codec import bitstream
from flax_cae.codec import container
from flax_cae.data.pipeline import to_float
from flax_cae.measures import metrics
from flax_cae.models import balle2017 as balle
from flax_cae.runtime.errors import ConfigError

ENTROPY_FILE = 'entropy_model.npz'
# Quantizer steps in standard deviations of each code channel: coarse to fine. The finest
# is the default: it costs a reconstruction a few tenths of a dB (a coarser step trades
# more of it for fewer bytes).
STEPS = (0.5, 0.25, 0.125)
DEFAULT_STEP = 0.125
FIT_IMAGES = 10000  # training codes the tables are counted on (at most)
HOST_BYTES = 256 * 2**20  # images a fit or a measurement copies to the host at once, at most


def compresses(task: str, bottleneck: dict | None) -> bool:
  """Whether a model's code can be a codec's: one `latent` array (no skips around it),
  smaller than the image."""
  return (task in ('reconstruction', 'variational', 'rate_distortion') and bottleneck is not None
          and set(bottleneck['parts']) == {'latent'} and bottleneck['compression_ratio'] > 1)


@dataclasses.dataclass
class EntropyModel:
  """{step: CodeModel} of one trained model; `learned`: the tables are a learned codec's
  density (one step, 1.0: plain rounding), else counts of its training codes;
  `weights_step`: the checkpoint step of the weights it was fitted for (None: not recorded)."""
  tables: dict
  learned: bool = False
  weights_step: int | None = None

  @property
  def steps(self) -> tuple[float, ...]:
    return tuple(sorted(self.tables, reverse=True))

  @property
  def default_step(self) -> float:
    if self.learned:
      return 1.0
    return DEFAULT_STEP if DEFAULT_STEP in self.tables else min(self.tables)

  def table(self, step: float | None = None) -> bitstream.CodeModel:
    step = self.default_step if step is None else float(step)
    for s, model in self.tables.items():
      if np.float32(s) == np.float32(step):  # (a stream's header holds the step as float32)
        return model
    steps = ', '.join(f'{s:g}' for s in self.steps)
    raise ValueError(f"quantizer step {step:g} is not one of this model's ({steps}); pass one "
                     'of those.')

  def arrays(self) -> list[np.ndarray]:
    """Everything that fixes the bytes, in a fixed order (for a stream's fingerprint)."""
    out = [np.asarray(self.learned)]
    for s in self.steps:
      t = self.tables[s]
      out += [np.asarray(s, np.float64), t.step, t.low, t.probs, t.size]
    return out

  def save(self, path: str):
    fields = {'learned': np.asarray(self.learned), 'steps': np.asarray(self.steps, np.float64)}
    if self.weights_step is not None:
      fields['weights_step'] = np.asarray(self.weights_step, np.int64)
    for i, s in enumerate(self.steps):
      t = self.tables[s]
      fields.update({f'{k}_{i}': getattr(t, k) for k in ('step', 'low', 'probs', 'size')})
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
      np.savez(f, **fields)
    os.replace(tmp, path)  # never a half-written model beside the checkpoints

  @classmethod
  def load(cls, path: str) -> 'EntropyModel':
    try:
      with np.load(path) as z:
        tables = {float(s): bitstream.CodeModel(*(z[f'{k}_{i}'] for k in
                                                   ('step', 'low', 'probs', 'size')))
                  for i, s in enumerate(z['steps'])}
        weights_step = int(z['weights_step']) if 'weights_step' in z.files else None
        return cls(tables, bool(z['learned']), weights_step)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise ConfigError(f'{path} is not a readable entropy model ({e}); in a workdir, rerun '
                        'its launch.py command to fit it anew; in an exported or shipped model, '
                        'export or install it again.') from None


def fit(train_codes: np.ndarray, steps=STEPS) -> EntropyModel:
  """Tables at every step of `steps` (in standard deviations of each channel) from training
  codes [N, ..., C]."""
  flat = np.asarray(train_codes, np.float64).reshape(-1, train_codes.shape[-1])
  std = flat.std(0)
  std = np.where(std > 0, std, 1.0)  # a dead channel: any step codes it in ~0 bits
  return EntropyModel({s: bitstream.CodeModel.fit(flat, s * std) for s in steps})


def from_density(train_codes: np.ndarray, density) -> EntropyModel:
  """A learned codec's model: its density `density(low [C], size)` -> probs [C, size]
  tabulated over the integers its rounded training codes reach (with MARGIN beyond)."""
  flat = np.round(np.asarray(train_codes, np.float64).reshape(-1, train_codes.shape[-1]))
  low = flat.min(0).astype(np.int64) - bitstream.MARGIN
  size = int((flat.max(0) - low).max()) + 1 + bitstream.MARGIN
  return EntropyModel({1.0: bitstream.CodeModel.from_density(density(low, size), low)},
                      learned=True)


def host_count(available: int, image_shape) -> int:
  """How many of `available` images fit in HOST_BYTES (at least one)."""
  return min(available, max(1, HOST_BYTES // int(np.prod(image_shape))))


def fit_count(available: int, image_shape) -> int:
  """How many images a fit codes: at most FIT_IMAGES and HOST_BYTES."""
  return min(FIT_IMAGES, host_count(available, image_shape))


def fit_for(codes: np.ndarray, model, variables, learned: bool,
            weights_step: int | None = None) -> EntropyModel:
  """The entropy model of a trained model (its weights of checkpoint `weights_step`) from its
  training codes: Balle's learned density where the model learned one (`learned`: a
  rate-distortion run), else counted tables."""
  if learned:
    fitted = from_density(codes, lambda low, size: balle.discretized_density(
        model, variables, low, size))
  else:
    fitted = fit(codes)
  fitted.weights_step = None if weights_step is None else int(weights_step)
  return fitted


def code_images(model: bitstream.CodeModel, codes: np.ndarray) -> tuple[list[bytes], np.ndarray]:
  """Each code of [N, ..., C] quantized and range-coded alone: (N streams, the dequantized
  codes decoded back from those bytes). A coder that does not give back what it was given
  stops everything: every number downstream would be wrong."""
  streams, decoded = [], []
  for code in codes:
    q = model.quantize(code)
    data = model.encode(q)
    back = model.decode(data, q.shape)
    if not np.array_equal(back, q):
      raise RuntimeError('the range coder did not return the coded symbols; report this.')
    streams.append(data)
    decoded.append(model.dequantize(back))
  return streams, np.stack(decoded)


def measure(model: EntropyModel, encode, decode, images_u8: np.ndarray, chunk: int = 500
            ) -> list[dict]:
  """Bits per pixel, PSNR and SSIM of images [N, H, W, C] coded alone at every step, each
  reconstruction decoded from its bytes. `bpp`: the .fcae file (container.py's header
  included), as `Model.compress` writes it; `bpp_payload`: the range coder's bytes alone.
  encode(uint8 [B, ...]) -> codes; decode(codes) -> float images."""
  codes = np.concatenate([np.asarray(encode(images_u8[i:i + chunk]), np.float32)
                          for i in range(0, len(images_u8), chunk)])
  pixels = images_u8.shape[1] * images_u8.shape[2]
  points = []
  for step in model.steps:
    streams, decoded = code_images(model.table(step), codes)
    recon = [np.asarray(decode(decoded[i:i + chunk]), np.float32)
             for i in range(0, len(decoded), chunk)]
    psnr, ssim = mean_scores(np.concatenate(recon), images_u8, chunk)
    payload = float(np.mean([len(s) for s in streams]))
    points.append({'step': step, 'bpp': 8 * (payload + container.HEADER_BYTES) / pixels,
                   'bpp_payload': 8 * payload / pixels, 'psnr': psnr, 'ssim': ssim})
  return points


@jax.jit
def _psnr_ssim(recon, target_u8):
  m = metrics.image_metrics(recon, to_float(target_u8))
  return m['psnr'], m['ssim']


def mean_scores(recon: np.ndarray, images_u8: np.ndarray, chunk: int = 500
                ) -> tuple[float, float]:
  """Mean per-image PSNR and SSIM of float reconstructions against uint8 images, as every
  table of the package reports them."""
  out = [_psnr_ssim(recon[i:i + chunk], images_u8[i:i + chunk])
         for i in range(0, len(recon), chunk)]
  return tuple(float(np.concatenate([np.asarray(o[k]) for o in out]).mean()) for k in (0, 1))
