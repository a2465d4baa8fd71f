"""Codes to bytes and back: a uniform scalar quantizer per channel, a per-channel
probability model, and constriction's range coder.

A code of any shape [..., C] (a CAE's [H, W, C] map, PCA's [k] coefficients with one
"channel" per component) is quantized channel by channel, q = round(z / step[c]), each q
clamped to the range of symbols its channel's model holds (the range seen on the training
split, widened by a margin), and entropy-coded image by image with the probabilities of
its channel. The model is a table: `CodeModel.fit` counts the training split's symbols
(plus one, so no symbol of the range costs infinitely many bits); a learned codec hands in
its own discretized density instead. A model is saved as one .npz beside the checkpoint.

Sizes are the encoded stream's length in bytes: constriction's 32-bit words, big-endian,
less the zero bytes that end the last word (decode restores them); nothing else is needed
to decode one image alone (its shape and the model are fixed by the
checkpoint, as a codec's tables are).
"""

import dataclasses
import os

import constriction
import numpy as np

from flax_cae.runtime.errors import ConfigError

MARGIN = 2  # symbols beyond the training range on each side, coded at the smallest mass
CODER_CHUNK = 1 << 16  # symbols per call of the coder: its probability rows stay small


@dataclasses.dataclass
class CodeModel:
  """step [C] (quantizer step per channel), low [C] (int: each channel's smallest symbol),
  probs [C, K] (probability of symbols low[c] .. low[c] + K - 1; zero past a channel's own
  range: `size[c]` symbols)."""
  step: np.ndarray
  low: np.ndarray
  probs: np.ndarray
  size: np.ndarray

  @classmethod
  def fit(cls, codes: np.ndarray, step) -> 'CodeModel':
    """Counts the symbols of training codes [N, ..., C] quantized with `step` (a number or
    [C]), one table per channel, each range widened by MARGIN, counts + 1."""
    codes = np.asarray(codes, np.float64)
    c = codes.shape[-1]
    step = np.broadcast_to(np.asarray(step, np.float64), (c,)).copy()
    if not np.all(np.isfinite(step)) or np.any(step <= 0):
      raise ConfigError(f'quantizer steps must be finite and > 0, got {step}.')
    q = np.round(codes.reshape(-1, c) / step).astype(np.int64)
    low, high = q.min(0) - MARGIN, q.max(0) + MARGIN
    size = high - low + 1
    counts = np.zeros((c, int(size.max())))
    for ch in range(c):
      counts[ch, :size[ch]] = np.bincount(q[:, ch] - low[ch], minlength=size[ch]) + 1.0
    return cls(step, low.astype(np.int64), counts / counts.sum(1, keepdims=True),
               size.astype(np.int64))

  @classmethod
  def from_density(cls, probs: np.ndarray, low: np.ndarray, step=1.0) -> 'CodeModel':
    """A model from a learned density already discretized: probs [C, K] of symbols
    low[c] .. low[c] + K - 1 (e.g. Balle et al.'s factorized prior)."""
    probs = np.asarray(probs, np.float64)
    c = probs.shape[0]
    size = np.full(c, probs.shape[1], np.int64)
    return cls(np.broadcast_to(np.asarray(step, np.float64), (c,)).copy(),
               np.asarray(low, np.int64), probs / probs.sum(1, keepdims=True), size)

  @property
  def channels(self) -> int:
    return len(self.step)

  def quantize(self, codes: np.ndarray) -> np.ndarray:
    """int32 symbols of codes [..., C], clamped to each channel's range."""
    q = np.round(np.asarray(codes, np.float64) / self.step)
    return np.clip(q, self.low, self.low + self.size - 1).astype(np.int32)

  def dequantize(self, symbols: np.ndarray) -> np.ndarray:
    return (np.asarray(symbols, np.float64) * self.step).astype(np.float32)

  def encode(self, symbols: np.ndarray) -> bytes:
    """One image's symbols [..., C] -> its bitstream."""
    flat = np.asarray(symbols, np.int64).reshape(-1)
    ch = np.arange(flat.size) % self.channels
    rel = flat - self.low[ch]
    if np.any(rel < 0) or np.any(rel >= self.size[ch]):
      raise ValueError('symbols outside the model\'s range: quantize() them first.')
    encoder = constriction.stream.queue.RangeEncoder()
    for start in range(0, flat.size, CODER_CHUNK):  # (the same bytes as one call, less memory)
      part = slice(start, start + CODER_CHUNK)
      encoder.encode(rel[part].astype(np.int32),
                     constriction.stream.model.Categorical(perfect=False),
                     self.probs[ch[part]])
    data = encoder.get_compressed().astype('>u4').tobytes()
    # The last word's low bytes are often zero padding: drop up to 3 (decode puts them back).
    return data[:len(data) - min(3, len(data) - len(data.rstrip(b'\0')))]

  def decode(self, data: bytes, shape) -> np.ndarray:
    """A bitstream -> the int32 symbols [shape] it holds."""
    n = int(np.prod(shape))
    ch = np.arange(n) % self.channels
    words = np.frombuffer(data + b'\0' * (-len(data) % 4), '>u4').astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    rel = np.concatenate([np.asarray(decoder.decode(
        constriction.stream.model.Categorical(perfect=False), self.probs[ch[i:i + CODER_CHUNK]]))
        for i in range(0, n, CODER_CHUNK)] or [np.zeros(0, np.int64)])
    return (np.asarray(rel, np.int64) + self.low[ch]).astype(np.int32).reshape(shape)

  def bits(self, symbols: np.ndarray) -> float:
    """The model's ideal code length of one image's symbols (bits): what the stream's
    length approaches, to within the coder's few bytes of overhead."""
    flat = np.asarray(symbols, np.int64).reshape(-1)
    ch = np.arange(flat.size) % self.channels
    return float(-np.log2(self.probs[ch, flat - self.low[ch]]).sum())

  def save(self, path: str):
    with open(path, 'wb') as f:
      np.savez(f, step=self.step, low=self.low, probs=self.probs, size=self.size)

  @classmethod
  def load(cls, path: str) -> 'CodeModel':
    if not os.path.isfile(path):
      raise ConfigError(f'{path} holds no code model; run the rate-distortion study on that '
                        'workdir first.')
    with np.load(path) as z:
      return cls(z['step'], z['low'], z['probs'], z['size'])
