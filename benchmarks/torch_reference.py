"""The PyTorch loop flax-cae users would otherwise run: the same architectures, trained the way
the papers' code does it (eager, a DataLoader over a TensorDataset, opt.step() per batch), and
the same with torch.compile. PyTorch is an optional benchmark dependency (pip install -e
'.[bench]'); the package never imports this file.

`TorchAutoencoder` mirrors flax_cae's models layer for layer (NCHW, PyTorch's own layers), with
its modules named like the Flax ones, so `load_flax_variables` can copy a Flax model's weights
in and `same_function` checks that both compute the same outputs, not only the same
parameter count.

  python benchmarks/torch_reference.py [--models=base_cae] [--batch_sizes=64,256] [--compile]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flax_cae.models.layers import ModelOptions, conv_out_size  # pylint: disable=g-import-not-at-top


def activation(opts: ModelOptions):
  return {
      'relu': F.relu, 'leaky_relu': lambda x: F.leaky_relu(x, opts.negative_slope),
      'gelu': lambda x: F.gelu(x, approximate='tanh'),  # Flax's gelu is the tanh form
      'tanh': torch.tanh, 'sigmoid': torch.sigmoid, 'elu': F.elu, 'silu': F.silu,
  }[opts.activation]


class TorchAutoencoder(nn.Module):
  """cae (S0), base_cae or improved_cae (S1), as flax_cae builds them from `opts`."""

  def __init__(self, name: str, opts: ModelOptions):
    super().__init__()
    if opts.dropout_rate:
      raise ValueError('the PyTorch mirror has no dropout; use dropout_rate=0.')
    self.name, self.o, self.act = name, opts, activation(opts)
    h, w, c = opts.image_shape
    widths, n = list(opts.widths), len(opts.widths)
    strides = {'cae': [1] * n, 'base_cae': [2] * n, 'improved_cae': [2] * (n - 1) + [1]}[name]
    sizes = [(h, w)]
    for s in ([2] * n if name == 'cae' else strides):  # S0 halves by max-pooling
      sizes.append(tuple(conv_out_size(d, s) for d in sizes[-1]))
    self.sizes, self.strides = sizes, strides
    bh, bw = sizes[-1]
    flat = bh * bw * widths[-1]
    out_widths = list(reversed(widths[:-1])) + [c]
    bn = opts.batch_norm
    enc, dec = nn.ModuleDict(), nn.ModuleDict()
    cin = c
    n_enc_bn = {'cae': n, 'base_cae': n - 1, 'improved_cae': n - 1}[name]
    for i, (wd, s) in enumerate(zip(widths, strides)):
      enc[f'Conv_{i}'] = nn.Conv2d(cin, wd, 3, s, 1)
      if bn and i < n_enc_bn:
        enc[f'BatchNorm_{i}'] = nn.BatchNorm2d(wd, eps=1e-5, momentum=0.1)
      cin = wd
    if name == 'base_cae':
      enc['Dense_0'] = nn.Linear(flat, opts.hidden_dim)
      enc['Dense_1'] = nn.Linear(opts.hidden_dim, opts.latent_dim)
      dec['Dense_0'] = nn.Linear(opts.latent_dim, opts.hidden_dim)
      dec['Dense_1'] = nn.Linear(opts.hidden_dim, flat)
      self.flat_in, self.flat_out = 'encoder/Dense_0', 'decoder/Dense_1'
    else:
      enc['Dense_0'] = nn.Linear(flat, opts.latent_dim)
      dec['Dense_0'] = nn.Linear(opts.latent_dim, flat)
      self.flat_in, self.flat_out = 'encoder/Dense_0', 'decoder/Dense_0'
    cin = widths[-1]
    for i, wd in enumerate(out_widths):
      dec[f'ConvTranspose_{i}'] = nn.ConvTranspose2d(
          cin, wd, 3, strides[n - 1 - i] if name == 'improved_cae' else 2, 1)
      if bn and i < n - 1:
        dec[f'BatchNorm_{i}'] = nn.BatchNorm2d(wd, eps=1e-5, momentum=0.1)
      cin = wd
    self.encoder, self.decoder = enc, dec
    self.flat_shape = (widths[-1], bh, bw)

  def _bn(self, mods, key, x):
    return mods[key](x) if key in mods else x

  def forward(self, x):
    e, d, act, n = self.encoder, self.decoder, self.act, len(self.o.widths)
    skips = {}
    for i in range(n):
      x = e[f'Conv_{i}'](x)
      if self.name == 'cae':
        x = F.max_pool2d(act(self._bn(e, f'BatchNorm_{i}', x)), 2, ceil_mode=True)
      elif i < n - 1 or self.name == 'improved_cae':
        x = act(self._bn(e, f'BatchNorm_{i}', x))
      if i + 1 in self.o.skips:
        skips[i + 1] = x
    x = x.flatten(1)
    if self.name == 'base_cae':
      z = e['Dense_1'](act(e['Dense_0'](x)))
      x = d['Dense_1'](act(d['Dense_0'](z))).view(-1, *self.flat_shape)
    else:
      x = d['Dense_0'](e['Dense_0'](x)).view(-1, *self.flat_shape)
      x = act(x)
    for i in range(n):
      stage = n - i
      if stage in skips:
        x = x + skips[stage]
      x = d[f'ConvTranspose_{i}'](x, output_size=self.sizes[stage - 1])
      if i < n - 1:
        if self.name == 'base_cae' and i == n - 2:  # S1's ReLU-then-BN stage
          x = self._bn(d, f'BatchNorm_{i}', act(x))
        else:
          x = act(self._bn(d, f'BatchNorm_{i}', x))
    return torch.sigmoid(x)


def _t(a) -> torch.Tensor:
  return torch.from_numpy(np.array(a, np.float32))  # a writable, contiguous copy


def n_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def load_flax_variables(model: TorchAutoencoder, variables: dict):
  """Copies a Flax model's params and batch_stats into the mirror (layouts converted)."""
  params, stats = variables['params'], variables.get('batch_stats', {})
  for part in ('encoder', 'decoder'):
    mods = getattr(model, part)
    for key, mod in mods.items():
      p = params[part][key]
      if isinstance(mod, nn.Conv2d):
        mod.weight.copy_(_t(np.asarray(p['kernel']).transpose(3, 2, 0, 1)))
        mod.bias.copy_(_t(p['bias']))
      elif isinstance(mod, nn.ConvTranspose2d):  # Flax applies it unflipped to a dilated input
        k = np.asarray(p['ConvTranspose_0']['kernel'])[::-1, ::-1].transpose(2, 3, 0, 1)
        mod.weight.copy_(_t(k))
        mod.bias.copy_(_t(p['ConvTranspose_0']['bias']))
      elif isinstance(mod, nn.BatchNorm2d):
        mod.weight.copy_(_t(p['scale']))
        mod.bias.copy_(_t(p['bias']))
        mod.running_mean.copy_(_t(stats[part][key]['mean']))
        mod.running_var.copy_(_t(stats[part][key]['var']))
      elif isinstance(mod, nn.Linear):
        k, b = np.asarray(p['kernel']), np.asarray(p['bias'])
        c, h, w = model.flat_shape
        if f'{part}/{key}' == model.flat_in:  # Flax flattens HWC, PyTorch CHW
          k = k.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        if f'{part}/{key}' == model.flat_out:
          k = k.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(-1, c * h * w)
          b = b.reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        mod.weight.copy_(_t(k.T))
        mod.bias.copy_(_t(b))


def same_function(flax_model, variables, images_u8: np.ndarray) -> tuple[int, int, float]:
  """(flax params, torch params, max |output difference|) on the same weights and images."""
  import jax  # pylint: disable=g-import-not-at-top
  name = {v: k for k, v in _registry().items()}[flax_model.encoder_cls]
  tm = TorchAutoencoder(name, flax_model.opts).eval()
  load_flax_variables(tm, variables)
  x = images_u8.astype(np.float32) / 255.0
  # Full float32 on both sides: on a GPU, JAX's and cuDNN's defaults use TF32 (10-bit
  # mantissas), which would hide a wrong layer in the rounding.
  with jax.default_matmul_precision('highest'):
    ours = np.asarray(flax_model.apply(variables, x)['reconstruction'])
  with torch.no_grad():
    theirs = tm(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
  n_flax = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables['params']))
  return n_flax, n_params(tm), float(np.abs(ours - theirs).max())


def _registry():
  from flax_cae import models  # pylint: disable=g-import-not-at-top
  # The encoder-residual variants share ImprovedCAE's classes and have no mirror here.
  return {name: spec.encoder for name, spec in models.MODELS.items() if spec.torch_mirror}


def default_device() -> str:
  return 'cuda' if torch.cuda.is_available() else 'cpu'


def train_timer(model: nn.Module, images_u8: np.ndarray, batch: int, warmup: int = 3,
                lr: float = 1e-3, device: str = 'cpu'):
  """The papers' loop: DataLoader(TensorDataset(float images), shuffle) -> batch.to(device),
  forward, MSE, backward, opt.step(), per batch, with PyTorch's default settings. Runs
  `warmup` steps, then returns run(steps) -> seconds that `steps` more steps took (the loop
  goes on across epochs and calls; loss.item() at the end waits for the device)."""
  data = torch.from_numpy(images_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=batch,
                                       shuffle=True, drop_last=True)
  model.to(device)
  opt = torch.optim.Adam(model.parameters(), lr=lr)
  model.train()

  def batches():
    while True:
      yield from loader

  it = batches()

  def run(steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
      (x,) = next(it)
      x = x.to(device)
      opt.zero_grad()
      loss = F.mse_loss(model(x), x)
      loss.backward()
      opt.step()
    loss.item()
    return time.perf_counter() - t0

  run(warmup)
  return run


def compile_mode(device: str) -> str:
  """torch.compile's mode for the device-resident loop: CUDA graphs on a GPU (each step's
  kernels replayed in one launch), the default elsewhere (CUDA graphs need a GPU)."""
  return 'reduce-overhead' if device.startswith('cuda') else 'default'


def resident_timer(model: nn.Module, images_u8: np.ndarray, batch: int, warmup: int = 5,
                   lr: float = 1e-3, device: str = 'cpu', mode: str | None = None):
  """The loop the CIFAR-10 speed-run codebases (airbench, hlb-CIFAR10) use: the whole data
  set on the device as one uint8 tensor in channels_last, each epoch's permutation drawn on
  the device, each batch gathered and scaled to [0, 1] on the device, the model in
  channels_last and torch.compile'd (`mode`, default compile_mode(device)), Adam fused on a
  GPU. Same contract as train_timer: run(steps) -> seconds for `steps` more steps."""
  if batch > len(images_u8):
    raise ValueError(f'batch {batch} is larger than the {len(images_u8)} images.')
  cuda = device.startswith('cuda')
  data = torch.from_numpy(np.ascontiguousarray(images_u8.transpose(0, 3, 1, 2))).to(device)
  data = data.contiguous(memory_format=torch.channels_last)
  model = model.to(device).to(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=lr, fused=cuda)
  net = torch.compile(model, mode=mode or compile_mode(device))
  model.train()
  n, per_epoch = len(data), len(data) // batch
  at = {'perm': None, 'i': per_epoch}

  def step():
    if at['i'] == per_epoch:  # a new epoch: a new order, drawn on the device
      at['perm'], at['i'] = torch.randperm(n, device=device), 0
    idx = at['perm'][at['i'] * batch:(at['i'] + 1) * batch]
    at['i'] += 1
    x = data[idx].float().div_(255.0).contiguous(memory_format=torch.channels_last)
    loss = F.mse_loss(net(x), x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  def run(steps: int) -> float:
    t0 = time.perf_counter()
    loss = None
    for _ in range(steps):
      loss = step()
    if loss is not None:
      loss.item()  # waits for the device
    return time.perf_counter() - t0

  run(warmup)
  return run


def train_images_per_second(model: nn.Module, images_u8: np.ndarray, batch: int, steps: int,
                            warmup: int = 3, lr: float = 1e-3, device: str = 'cpu') -> float:
  """Steady-state training images/s of train_timer's loop over `steps` batches."""
  return steps * batch / train_timer(model, images_u8, batch, warmup, lr, device)(steps)


@torch.no_grad()
def eval_images_per_second(model: nn.Module, images_u8: np.ndarray, batch: int,
                           steps: int, device: str = 'cpu') -> float:
  data = torch.from_numpy(images_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
  data = data.to(device)
  model.to(device).eval()
  model(data[:batch])
  t0 = time.perf_counter()
  for i in range(steps):
    j = (i * batch) % (len(data) - batch + 1)
    model(data[j:j + batch]).sum().item()
  return steps * batch / (time.perf_counter() - t0)


def main():
  from flax_cae import models  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(sorted(_registry())))
  parser.add_argument('--batch_sizes', default='64,256')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--compile', action='store_true', help='also time torch.compile')
  parser.add_argument('--device', default=default_device(), help='cpu | cuda')
  args = parser.parse_args()
  images = np.random.default_rng(0).integers(0, 256, (2048, 32, 32, 3), dtype=np.uint8)
  print(f'torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads')
  print('| model | batch | params | eager train img/s | compiled train img/s |')
  print('|---|---|---|---|---|')
  for name in args.models.split(','):
    opts = models.build_model(ml_collections.ConfigDict(dict(name=name, activation='relu')),
                              images.shape[1:]).opts
    for b in (int(v) for v in args.batch_sizes.split(',')):
      eager = train_images_per_second(TorchAutoencoder(name, opts), images, b, args.steps,
                                      device=args.device)
      compiled = (train_images_per_second(torch.compile(TorchAutoencoder(name, opts)), images, b,
                                          args.steps, device=args.device)
                  if args.compile else float('nan'))
      print(f'| {name} | {b} | {n_params(TorchAutoencoder(name, opts)):,} | {eager:,.0f} | '
            f'{compiled:,.0f} |')


if __name__ == '__main__':
  main()
