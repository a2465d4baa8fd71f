"""How many training steps to run per device call, measured on this backend.

Sets `DEFAULT_STEPS_PER_CALL` in flax_cae/runtime/xla.py. Trains the real model and step
(`flax_cae.training.trainer.Trainer`) on CIFAR-10-sized uint8 data kept on the device, for
several steps-per-call values, plus the host-streaming path at 1 step per call, and
prints images/s (steady state, after a compile call, timed with block_until_ready)
as a Markdown table under a header naming the device, the CPU model and its vector
extensions, the versions, the date and the commit; --out=PATH writes PATH.md, PATH.csv and
PATH.json (docs/tables.py reads the CSV), --json writes the rows alone.

  python benchmarks/steps_per_call.py [--model=improved_cae] [--batch=256] [--steps=16] [--ks=1,4]
      [--out=benchmarks/results/NAME]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

import record  # benchmarks/record.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import s1  # pylint: disable=g-import-not-at-top
from flax_cae.runtime import host_memory
from flax_cae.runtime import machine
from flax_cae import models
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib
from flax_cae.data import pipeline


def measure(trainer, state, split, k, steps, batch, mesh):
  """images/s over `steps` steps (rounded up to whole calls) after one warm-up call."""
  perm = pipeline.epoch_permutation(0, 0, split.n, mesh)
  spe = split.n // batch
  host_perm = np.asarray(perm)

  def call(state, offset):
    if split.on_device:
      return trainer.train_chunk(k, True)(state, split.images, split.labels, perm, offset)
    idx = host_perm[offset * batch:(offset + k) * batch]
    host = split.host_images[idx].reshape(k, batch, *split.image_shape)
    labels = np.zeros((k, batch), np.int32)
    return trainer.train_chunk(k, False)(state, tuple(
        pipeline.to_global(x, trainer.stacked_sharding, x.shape) for x in (host, labels)))

  state, loss = call(state, 0)
  jax.block_until_ready((state, loss))
  calls = -(-steps // k)
  t0 = time.perf_counter()
  for i in range(calls):
    state, loss = call(state, (i * k) % (spe - k + 1))
  jax.block_until_ready((state, loss))
  return state, calls * k * batch / (time.perf_counter() - t0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='improved_cae', choices=models.model_names())
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--steps', type=int, default=16, help='timed steps per setting')
  parser.add_argument('--ks', default='1,4', help='steps per call to compare')
  parser.add_argument('--image', default='32,32,3', help='H,W,C of the synthetic data')
  parser.add_argument('--n', type=int, default=4096, help='synthetic training images')
  parser.add_argument('--cpu_malloc', default='keep', choices=host_memory.CPU_MALLOC,
                      help="as launch.py's config.cpu_malloc, applied before JAX starts")
  parser.add_argument('--json', default='', help='also write the rows to this file')
  parser.add_argument('--out', default='', help='write OUT.md, OUT.csv and OUT.json')
  args = parser.parse_args()
  memory = host_memory.configure(args.cpu_malloc)

  shape = tuple(int(v) for v in args.image.split(','))
  config = s1.get_s1_config('cifar10', 'improved')
  config.model.name = args.model
  config.model.widths = ()
  config.batch_size = args.batch
  mesh = pipeline.make_mesh()
  model = models.build_model(config.model, shape)
  rng = np.random.default_rng(0)
  host_images = rng.integers(0, 256, (args.n, *shape), dtype=np.uint8)
  on_device = pipeline.Split('train', args.n, shape, images=jax.device_put(
      host_images, pipeline.batch_sharding(mesh)), labels=jax.device_put(
          np.zeros((args.n,), np.int32), pipeline.batch_sharding(mesh)))
  streamed = pipeline.Split('train', args.n, shape)
  streamed.host_images = host_images  # in memory: measures the transfer, not disk reads

  with train.random_streams():
    trainer = trainer_lib.Trainer(config, model, mesh, steps_per_epoch=args.n // args.batch)
    state = trainer.init_state()
    rows = []
    settings = [(int(k), on_device) for k in args.ks.split(',')] + [(1, streamed)]
    for k, split in settings:
      state, rate = measure(trainer, state, split, k, args.steps, args.batch, mesh)
      rows.append({'model': args.model, 'batch': args.batch,
                   'data': 'device (uint8)' if split.on_device else 'host, streamed',
                   'steps_per_call': k, 'images_per_second': round(rate, 1)})

  commit = machine.commit()
  title = header(args.model, args.batch, shape, memory)
  base = rows[0]['images_per_second']
  lines = [f'Steps per device call: {title}', '',
           '| data | steps per call | images/s | vs 1 step per call |', '|---|---|---|---|']
  lines += [f"| {r['data']} | {r['steps_per_call']} | {r['images_per_second']:,.0f} | "
            f"{r['images_per_second'] / base:.2f}x |" for r in rows]
  text = '\n'.join(lines)
  print('\n' + text)
  if args.json:
    Path(args.json).write_text(json.dumps(
        {'model': args.model, 'batch': args.batch, 'backend': jax.default_backend(),
         'device': jax.devices()[0].device_kind, 'jax': jax.__version__, 'commit': commit,
         'rows': rows}, indent=2))
  if args.out:
    record.write(args.out, title, rows, text)


def header(model: str, batch: int, shape, memory: str) -> str:
  """The run's header line: what was timed, then record.machine_line (the device, the CPU
  model and its vector extensions, the versions, the host, the date and the commit)."""
  return (f'{model}, batch {batch}, {"x".join(map(str, shape))} images; '
          f'{record.machine_line()}, host memory: {memory}')




if __name__ == '__main__':
  main()
