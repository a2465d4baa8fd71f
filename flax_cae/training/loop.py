"""The one training loop: every model, loss and data set goes through `train_and_evaluate`
(one run) or `train_members` (several runs in one vmapped program).

A run is built by `run.create_run`; the loop advances it one device call at a time
(`train_call`), logs (`log_train`), evaluates and checkpoints (`evaluate_and_save`), and at
the end scores the kept checkpoint (`finish`). The data order and every random stream are
functions of (seed, step), so a run resumed from a checkpoint continues exactly as if it had
never stopped.
"""

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from flax_cae import models as models_lib
from flax_cae.codec import entropy
from flax_cae.data import pipeline
from flax_cae.runtime import errors
from flax_cae.runtime import console
from flax_cae.runtime import machine
from flax_cae.runtime import preemption
from flax_cae.runtime import streams
from flax_cae.runtime import writers
from flax_cae.runtime.checkpoint import SCORE
from flax_cae.training import entropy_fit
from flax_cae.training import tasks
from flax_cae.training.trainer import MINIMIZED
from flax_cae.training import run as run_lib
from flax_cae.training.run import Run


def _fmt_time(seconds: float) -> str:
  seconds = int(max(0, seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


random_streams = streams.context  # (kept here too: benchmarks and studies call it by this name)


StopOnSigterm = preemption.StopOnSigterm  # (the loop reads it by this name)


def _epoch_order(run: Run, epoch: int, offset: int):
  """The permutation of `epoch` (one per member), and for streamed data a background
  reader of the rest of the epoch's chunks, in order (each process reads only its
  devices' rows of each [k, B] chunk)."""
  train = run.splits['train']
  if run.grouped:
    run.perm = pipeline.epoch_permutations(run.trainer.members['seed'], epoch, train.n, run.mesh)
    return
  run.perm = pipeline.epoch_permutation(run.config.seed, epoch, train.n, run.mesh)
  if not train.on_device:
    if run.prefetch is not None:
      run.prefetch.close()
    b, spc, spe = run.config.batch_size, run.steps_per_call, run.steps_per_epoch
    host_perm = pipeline.host_copy(run.perm)
    chunks = [(o, min(spc, spe - o)) for o in range(offset, spe, spc)]
    run.prefetch = pipeline.Prefetcher(
        lambda c, p=host_perm: train.global_batch(
            p[c[0] * b:(c[0] + c[1]) * b].reshape(c[1], b), run.trainer.stacked_sharding, axis=1),
        chunks)


def train_call(run: Run):
  """One device call: up to steps_per_call steps, never past the end of the epoch."""
  train = run.splits['train']
  epoch, offset = divmod(run.step, run.steps_per_epoch)
  if offset == 0 or run.perm is None:
    _epoch_order(run, epoch, offset)
  k = min(run.steps_per_call, run.steps_per_epoch - offset)
  if train.on_device:
    run.state, loss = run.trainer.train_chunk(k, True)(run.state, train.images, train.labels,
                                                       run.perm, offset)
  else:
    run.state, loss = run.trainer.train_chunk(k, False)(run.state, run.prefetch.get())
  run.step += k
  run.calls += 1
  run.log_losses.append((run.step, loss))
  # Throughput is timed from the end of the first call (compilation) to the last step.
  if run.first_call:
    jax.block_until_ready(run.state)
    run.meta['train_seconds'] += time.time() - run.seg_start
    run.seg_start, run.first_call = time.time(), False
  else:
    run.timed_images += k * run.config.batch_size


def check_finite(run: Run) -> list[float]:
  """The mean training loss of each member since the last read-back (the only host sync
  of training). A NaN/Inf loss stops a single run, naming the step (the last good
  checkpoint stays on disk); a member trained with others is marked diverged and the
  others go on, unless all have diverged."""
  n = len(run.members)
  if not run.log_losses:
    return [float('nan')] * n
  values = [np.reshape(v, (-1,)) for v in jax.device_get([l for _, l in run.log_losses])]
  for (at, _), value in zip(run.log_losses, values):
    for m in np.flatnonzero(~np.isfinite(value)):
      if run.meta['diverged_at'][m] is None:
        run.meta['diverged_at'][m] = at
        if run.grouped:
          logging.warning('Member %s diverged at step %d (loss %s); the others go on.',
                          run.members[m].name, at, value[m])
    if all(d is not None for d in run.meta['diverged_at']):
      run.ckpts.wait()  # an asynchronous save still in flight is finished, not left half-written
      good = run.ckpts.latest_step()
      raise errors.DivergedError(
          f'The training loss became {float(np.mean(value))} at step {at}; the last good '
          f'checkpoint ({"none yet" if good is None else f"step {good}"}) is kept in '
          f'{run.workdir!r}; lower --config.optimizer.learning_rate or set '
          '--config.optimizer.grad_clip_norm and run again.')
  return [float(x) for x in np.mean(values, axis=0)]


def log_train(run: Run):
  """Writes each member's mean training loss, learning rate and images/s since the last
  write (train rows of metrics.jsonl and TensorBoard)."""
  losses = check_finite(run)
  now = time.time()
  rate = (run.step - run.log_start) * run.config.batch_size / max(now - run.last_log, 1e-9)
  rates = run.trainer.learning_rates(run.step)
  status = (f'epoch {(run.step - 1) // run.steps_per_epoch + 1}/{run.config.num_epochs} loss '
            f"{' '.join(f'{l:.5f}' for l in losses)} lr {' '.join(f'{r:.2e}' for r in rates)} "
            f'{rate:.0f} img/s, '
            f'{_fmt_time((run.total_steps - run.step) * run.config.batch_size / max(rate, 1e-9))}'
            ' left')
  if console.showing_progress():
    run.bar.update_to(run.step, status)
  else:
    logging.info('step %d/%d %s', run.step, run.total_steps, status)
  for member, loss, lr in zip(run.members, losses, rates):
    member.writer.write(run.step, 'train', {
        'loss': loss, 'learning_rate': lr,
        # training seconds so far (evaluation excluded): S3's loss against wall-clock time
        'seconds': run.meta['train_seconds'] + (now - run.seg_start),
        'images_per_second': rate})
  run.last_log, run.log_losses, run.log_start = now, [], run.step


def write_snapshots(run: Run):
  """Each member's reconstruction snapshot of the first validation images: originals, (a
  denoiser's noisy inputs,) outputs, as reconstructions/step_N.png (flax_cae.visualize
  stacks them) and in TensorBoard. Written at every evaluation and every
  `snapshot_every_epochs`."""
  if not (run.trainer.task.reconstructs and run.splits['validation'].n):
    return
  sample = run.trainer.sample_images(run.splits['validation'], run.config.num_sample_images)
  recons = run.trainer.reconstruct(run.state, sample)
  noisy = run.trainer.noisy_inputs(sample)
  if not writers.is_writer():
    return
  for m, member in enumerate(run.members):
    grid = writers.reconstruction_grid(sample / 255.0, *([] if noisy is None else [noisy]),
                                       recons[m])
    writers.save_png(os.path.join(member.workdir, 'reconstructions', f'step_{run.step:08d}.png'),
                     grid)
    member.writer.image(run.step, 'validation/reconstructions', grid)


def evaluate_and_save(run: Run, epoch: int):
  """Validation metrics and a picture per member, early-stopping bookkeeping; a checkpoint
  when one is due, when a member's model is its best so far by the selection metric (so it
  is kept), or when training stops. Without a validation split: only the checkpoint."""
  config, meta, step = run.config, run.meta, run.step
  improved, scores = False, None
  if run.splits['validation'].n:
    vals = run.trainer.evaluate(run.state, run.splits['validation'])
    write_snapshots(run)
    if run.trainer.task.samples_prior:
      priors = run.trainer.prior_samples(run.state, max(config.num_sample_images, 1))
    es_metric, selection = config.early_stopping.metric, run_lib.selection_metric(config)
    scores = [(-1.0 if selection in MINIMIZED else 1.0) * v[selection] if d is None
              else float('nan') for v, d in zip(vals, meta['diverged_at'])]
    for m, (member, val) in enumerate(zip(run.members, vals)):
      member.writer.write(step, 'validation', val)
      logging.info('epoch %d step %d validation%s: %s', epoch, step,
                   f' ({member.name})' if run.grouped else '',
                   ', '.join(f'{k} {v:.4f}' for k, v in val.items() if k != 'count'))
      if run.trainer.task.samples_prior and writers.is_writer():
        writers.save_png(os.path.join(member.workdir, 'samples', f'step_{step:08d}.png'),
                         writers.reconstruction_grid(priors[m]))
      if meta['diverged_at'][m] is not None:
        continue
      es_score = (-1.0 if es_metric in MINIMIZED else 1.0) * val[es_metric]
      if meta['best_es'][m] is None or es_score > meta['best_es'][m] + config.early_stopping.min_delta:
        meta['best_es'][m], meta['bad_evals'][m] = es_score, 0
      else:
        meta['bad_evals'][m] += 1
      if meta['best_score'][m] is None or scores[m] > meta['best_score'][m]:
        meta['best_score'][m], meta['best_step'][m] = scores[m], step
        improved = True
    patience = config.early_stopping.patience
    if patience and meta['bad_evals'][0] >= patience:
      meta['stopped_early'] = True
      logging.info('Early stopping at epoch %d: validation %s did not improve for %d evals.',
                   epoch, es_metric, patience)
  meta['epoch'] = epoch
  if (improved or epoch % config.checkpoint_every_epochs == 0 or step == run.total_steps
      or meta['stopped_early']):
    run.ckpts.save(step, run.state, meta, metrics=None if scores is None else {
        SCORE: scores if run.grouped else scores[0]})


def save_on_stop(run: Run, why: str = 'SIGTERM') -> dict:
  """SIGTERM or Ctrl-C: saves the step reached (unless just saved) and says how to resume."""
  check_finite(run)
  if run.step not in run.ckpts.all_steps():  # not just saved at an epoch's end
    run.meta['epoch'] = run.step // run.steps_per_epoch
    run.meta['train_seconds'] += time.time() - run.seg_start
    run.ckpts.save(run.step, run.state, run.meta)
  close(run)
  logging.warning('Stopped by %s at step %d of %d; its checkpoint is in %s. Run the '
                  'same command to resume.', why, run.step, run.total_steps, run.ckpts.directory)
  return {'preempted': True, 'step': run.step, 'total_steps': run.total_steps}


def release(run: Run):
  """Stops the host reader and gives the workdir back (also when the run failed)."""
  if run.prefetch is not None:
    run.prefetch.close()
  if run.lock is not None:
    run.lock.__exit__()


def close(run: Run):
  release(run)
  run.ckpts.close()
  for member in run.members:
    member.writer.close()


def train_epochs(run: Run, stop) -> dict | None:
  """Trains to the end (or early stop); returns save_on_stop's record if SIGTERM came."""
  run.bar = console.progress(run.total_steps, run.step, show=writers.is_writer())
  try:
    return _train_epochs(run, stop)
  finally:
    run.bar.close()


def _train_epochs(run: Run, stop) -> dict | None:
  config = run.config
  while run.step < run.total_steps and not run.meta['stopped_early']:
    train_call(run)
    run.bar.update_to(run.step)
    if time.time() - run.last_log >= config.log_every_seconds or run.step == run.total_steps:
      log_train(run)
    if run.step % run.steps_per_epoch == 0:
      epoch = run.step // run.steps_per_epoch
      if (epoch % config.eval_every_epochs == 0 or epoch % config.checkpoint_every_epochs == 0
          or run.step == run.total_steps):
        if run.log_losses:  # the train curve gets a point at every evaluation
          log_train(run)
        seconds = time.time() - run.seg_start
        run.meta['train_seconds'] += seconds
        run.timed_seconds += seconds
        evaluate_and_save(run, epoch)
        run.seg_start = run.last_log = time.time()
      elif config.get('snapshot_every_epochs') and epoch % config.snapshot_every_epochs == 0:
        seconds = time.time() - run.seg_start  # (pictures are not training time)
        run.meta['train_seconds'] += seconds
        run.timed_seconds += seconds
        write_snapshots(run)
        run.seg_start = run.last_log = time.time()
    if stop.reached(run.calls) and run.step < run.total_steps and not run.meta['stopped_early']:
      return save_on_stop(run, stop.signalled or 'SIGTERM')
  if run.timed_images:
    run.meta['images_per_second'] = run.timed_images / max(run.timed_seconds, 1e-9)
  run.ckpts.wait()
  return None


def finish(run: Run) -> list[dict]:
  """Test and validation metrics of each member's kept model (its best checkpoint by the
  selection metric; the last model where there is no validation split); writes each
  member's results.json and results.md and returns them. Without a test split, the
  validation numbers are the reported ones (results say which)."""
  config, meta, train = run.config, run.meta, run.splits['train']
  rate = meta['images_per_second']  # this process's training rate (compilation excluded)
  if rate is None and meta['train_seconds']:  # nothing trained here: the whole run's rate
    rate = run.step * config.batch_size / meta['train_seconds']
  has_val, has_test = run.splits['validation'].n > 0, run.splits['test'].n > 0
  shown = run.splits['test' if has_test else 'validation']
  evaluated = {}  # kept step -> (test, validation, reconstructions) of every member there
  last = {}  # {kept step: its train state}, the latest one restored only (memory)
  pictures = run.trainer.task.reconstructs
  sample = run.trainer.sample_images(shown, config.num_sample_images) if pictures else None
  results = []
  for m, member in enumerate(run.members):
    c = member.config
    kept = meta['best_step'][m] if has_val else run.step
    result = {
        'model': c.model.name, 'data': c.data.name, 'loss': c.loss.name,
        'optimizer': c.optimizer.name, 'learning_rate': c.optimizer.learning_rate,
        'seed': c.seed, 'image_shape': list(train.image_shape),
        'eval_split': 'test' if has_test else 'validation',
        'selection_metric': run_lib.selection_metric(config) if has_val else None,
        'best_step': kept, 'total_steps': run.total_steps,
        'stopped_early': meta['stopped_early'], 'diverged_at_step': meta['diverged_at'][m],
        'task': tasks.task_name(c),
        **({} if run.bneck is None else {
            'bottleneck_floats': run.bneck['floats'], 'bottleneck_parts': run.bneck['parts'],
            'input_floats': run.bneck['input_floats'],
            'compression_ratio': run.bneck['compression_ratio']}),
        'bottleneck_text': models_lib.describe_bottleneck(run.bneck),
        'parameters': run.n_params, 'train_seconds': meta['train_seconds'],
        'images_per_second': rate, 'devices': run.mesh.devices.size,
        'backend': jax.default_backend(), 'model_options': models_lib.model_options(run.model),
        'members_trained_together': len(run.members) if run.grouped else 1,
        'device': machine.device(), 'commit': machine.commit(),
        'finished': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    }
    if meta['diverged_at'][m] is None and kept is not None:
      if kept not in evaluated:
        state = run.state
        if kept != run.step:
          state, _ = run.ckpts.restore(kept, run.state)
        last.clear()
        last[kept] = state
        evaluated[kept] = tuple(
            run.trainer.evaluate(state, run.splits[name]) if ok else [None] * len(run.members)
            for name, ok in (('test', has_test), ('validation', has_val))
        ) + (run.trainer.reconstruct(state, sample) if pictures else [None] * len(run.members),)
      test, val, recon = (x[m] for x in evaluated[kept])
      if pictures and writers.is_writer():  # the first test images and their reconstructions
        np.savez_compressed(os.path.join(member.workdir, 'test_samples.npz'),
                            images=sample, reconstructions=recon)
      for name, values in (('test', test), ('validation', val)):
        if values is not None:
          result.update({f'{name}_{k}': v for k, v in values.items() if k != 'count'})
      reported = test if has_test else val
      if entropy.compresses(result['task'], run.bneck):
        if kept not in last:  # (a member kept the step of an earlier one)
          last.clear()
          last[kept] = run.state if kept == run.step else run.ckpts.restore(kept, run.state)[0]
        result.update(entropy_fit.fit(run, last[kept], m, member.workdir, shown, kept))
      if has_test:
        member.writer.write(kept, 'test', test)
      logging.info('%s%s: %s (%s, step %s).',
                   result['eval_split'].capitalize(), f' ({member.name})' if run.grouped else '',
                   run.trainer.task.summary(reported),
                   f'best checkpoint by validation {run_lib.selection_metric(config)}' if has_val
                   else 'last model: no validation split', kept)
    writers.write_results(member.workdir, result)
    results.append(result)
  close(run)
  return results


def train_and_evaluate(config, workdir: str, splits: dict | None = None) -> dict:
  """Trains `config.model` on `config.data` in `workdir` (resuming if it holds checkpoints)
  and returns the results dict also written to results.json; stopped by SIGTERM, it saves
  and returns {'preempted': True, 'step': ..., 'total_steps': ...} instead."""
  with random_streams(), StopOnSigterm() as stop:
    run = run_lib.create_run(config, workdir, splits)
    try:
      return train_epochs(run, stop) or finish(run)[0]
    finally:
      release(run)


def train_members(config, workdir: str, members: list[tuple[str, str, Any]],
                  splits: dict | None = None) -> list[dict] | dict:
  """Trains members [(name, member workdir, config)] that differ only in MEMBER_NUMBERS
  in one compiled program (vmapped over the member axis), with their shared checkpoints
  in `workdir`. Returns each member's results (or save_on_stop's record)."""
  with random_streams(), StopOnSigterm() as stop:
    run = run_lib.create_run(config, workdir, splits, members=members)
    try:
      return train_epochs(run, stop) or finish(run)
    finally:
      release(run)
