"""Members trained together (one compiled program, vmapped over a member axis) against the
same members trained one after another, on the same backend, in the same run.

M members of one model that differ in learning rate and seed (a study's tuning grid or
repeats): 'together' is `flax_cae.training.trainer.Trainer(members=...)`, one call per step for all M;
'one by one' is M single-run Trainers, each timed for the same number of steps. The ratio is
together / one by one in images/s (> 1: training together is faster). Studies pick per
backend (`flax_cae.studies.plan.TOGETHER_AUTO`); this is what that choice rests on.

  python benchmarks/members.py [--models=improved_cae,base_cae] [--members=2,4] [--batch=256]
      [--steps=8] [--rounds=3] [--out=benchmarks/results/NAME]
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from configs import s1
from flax_cae.runtime import machine
from flax_cae import models
from flax_cae.training import loop as train
from flax_cae.training import trainer as trainer_lib
from flax_cae.data import pipeline


def timer(trainer, images, n, batch, members):
  """run(steps) -> seconds for that many more steps (after a compile call)."""
  mesh = trainer.mesh
  if members:
    perm = pipeline.epoch_permutations(trainer.members['seed'], 0, n, mesh)
  else:
    perm = pipeline.epoch_permutation(0, 0, n, mesh)
  fn = trainer.train_chunk(1, True)
  labels = pipeline.to_global(np.zeros((n,), np.int32), pipeline.batch_sharding(mesh), (n,))
  box = {'state': trainer.init_state(), 'step': 0}
  box['state'], loss = fn(box['state'], images, labels, perm, 0)
  jax.block_until_ready((box['state'], loss))
  spe = n // batch

  def run(steps):
    state = box['state']
    t0 = time.perf_counter()
    for _ in range(steps):
      box['step'] += 1
      state, loss = fn(state, images, labels, perm, box['step'] % spe)
    jax.block_until_ready((state, loss))
    box['state'] = state
    return time.perf_counter() - t0
  return run


def bench(name, m, args, images, shape):
  config = s1.get_s1_config('cifar10', 'improved')
  config.model.update(name=name, widths=(), skips=())
  config.batch_size = config.eval_batch_size = args.batch
  mesh = pipeline.make_mesh()
  model = models.build_model(config.model, shape)
  spe = args.n // args.batch
  rates = [1e-3 * 2 ** i for i in range(m)]
  numbers = {'seed': jnp.arange(m, dtype=jnp.int32),
             'learning_rate': jnp.asarray(rates, jnp.float32)}
  together = timer(trainer_lib.Trainer(config, model, mesh, spe, members=numbers), images, args.n,
                   args.batch, True)
  singles = []
  for i, lr in enumerate(rates):
    c = config.copy_and_resolve_references()
    c.seed, c.optimizer.learning_rate = i, lr
    singles.append(timer(trainer_lib.Trainer(c, model, mesh, spe), images, args.n, args.batch, False))
  t_together, t_alone = [], []
  for _ in range(args.rounds):  # alternating, so a slow spell of the machine hits both
    t_together.append(together(args.steps))
    t_alone.append(sum(s(args.steps) for s in singles))
  images_done = m * args.steps * args.batch
  ips_together = images_done / float(np.median(t_together))
  ips_alone = images_done / float(np.median(t_alone))
  return {'model': name, 'members': m, 'batch': args.batch,
          'together_img_s': ips_together, 'one_by_one_img_s': ips_alone,
          'ratio': ips_together / ips_alone, 'rounds_together_s': t_together,
          'rounds_one_by_one_s': t_alone}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='improved_cae,base_cae')
  parser.add_argument('--members', default='2,4')
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--steps', type=int, default=8, help='timed steps per member per round')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--n', type=int, default=4096, help='synthetic 32x32x3 training images')
  parser.add_argument('--out', default='', help='write OUT.md and OUT.json')
  args = parser.parse_args()

  shape = (32, 32, 3)
  mesh = pipeline.make_mesh()
  host = np.random.default_rng(0).integers(0, 256, (args.n, *shape), dtype=np.uint8)
  images = jax.device_put(host, pipeline.batch_sharding(mesh))
  rows = []
  with train.random_streams():
    for name in args.models.split(','):
      for m in (int(v) for v in args.members.split(',')):
        rows.append(bench(name, m, args, images, shape))
        print(rows[-1]['model'], m, f"{rows[-1]['ratio']:.2f}x", flush=True)

  head = machine.describe()
  lines = [f'Members trained together vs one by one; {head}', '',
           f'batch {args.batch} per member, {args.steps} steps per member per round, median '
           f'of {args.rounds} alternating rounds, random uint8 32x32x3 data on the device.', '',
           '| model | members | together (img/s) | one by one (img/s) | together / one by one |',
           '|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['model']} | {r['members']} | {r['together_img_s']:,.0f} | "
                 f"{r['one_by_one_img_s']:,.0f} | {r['ratio']:.2f}x |")
  text = '\n'.join(lines) + '\n'
  print('\n' + text)
  if args.out:
    Path(args.out + '.md').write_text(text)
    Path(args.out + '.json').write_text(json.dumps({'header': head, 'rows': rows}, indent=2))


if __name__ == '__main__':
  main()
