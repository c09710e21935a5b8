"""The experiment loop: `train_and_evaluate(config, workdir)`.

Builds everything a run needs from an `ml_collections` config (see
`zipfls_jax/training/config.py` for every key), resumes from the workdir's
latest checkpoint, trains with the compiled data-parallel step, evaluates
top-1/top-5 on the exact eval split, tracks the best top-1 (the paper's
metric), logs, checkpoints, and saves and stops cleanly on SIGTERM. All
numbers a step produces stay on the devices until a logging step. This is
the only place that joins models, data and training; it must not define
losses, models or input pipelines itself.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import threading
from typing import Any, Dict, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import metrics as metrics_lib
from zipfls_jax.training import objective as objective_lib
from zipfls_jax.training import optim
from zipfls_jax.training import parallel
from zipfls_jax.training.state import TrainState, create_train_state

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class RunSetup:
  """The pieces of a run derived from its config (no data read, no state)."""
  model: Any
  tx: Any
  learning_rate_fn: Any
  objective: objective_lib.Objective
  num_classes: int
  image_shape: tuple
  steps_per_epoch: int
  total_steps: int
  eval_every_steps: int


def build_setup(config: ml_collections.ConfigDict, *, num_train_examples: int) -> RunSetup:
  """Model, optimizer, schedule and objective of a config (cheap: no arrays).

  Building them checks the config values they own (`validate_config` checks
  the keys and the rest); each error names the config key.
  """
  from zipfls_jax import data, models  # pylint: disable=g-import-not-at-top
  spec = data.get_dataset_spec(config.dataset)
  image_size = config.image_size or spec.image_size
  objective = objective_lib.Objective.from_config(config.loss)
  model = models.get_model(
      config.model, num_classes=spec.num_classes, exits=config.exits,
      dtype=_DTYPES[config.dtype], bn_axis_name=None,
      vote_upsample=config.vote_upsample or None, vote_exits=config.vote_exits,
      zero_init_residual=config.zero_init_residual, **config.model_options.to_dict())
  steps_per_epoch = config.steps_per_epoch
  if steps_per_epoch <= 0:
    steps_per_epoch = num_train_examples // config.batch_size
  if steps_per_epoch <= 0:
    raise ValueError(f"The train split has {num_train_examples} examples, fewer than one "
                     f"batch of {config.batch_size}.")
  if config.num_train_steps > 0:
    total_steps = config.num_train_steps
  else:
    total_steps = int(round(config.num_epochs * steps_per_epoch))
  learning_rate_fn = optim.create_learning_rate_schedule(
      learning_rate=config.learning_rate, lr_schedule=config.lr_schedule,
      steps_per_epoch=steps_per_epoch, num_epochs=total_steps / steps_per_epoch,
      warmup_epochs=config.warmup_epochs, lr_decay_factor=config.lr_decay_factor,
      lr_decay_at=tuple(config.lr_decay_at),
      lr_decay_every_epochs=config.lr_decay_every_epochs)
  tx = optim.create_optimizer(learning_rate_fn, momentum=config.momentum,
                              nesterov=config.nesterov, weight_decay=config.weight_decay)
  eval_every_steps = max(1, int(round(config.eval_every_epochs * steps_per_epoch)))
  return RunSetup(model=model, tx=tx, learning_rate_fn=learning_rate_fn, objective=objective,
                  num_classes=spec.num_classes,
                  image_shape=(image_size, image_size, spec.channels),
                  steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                  eval_every_steps=eval_every_steps)


class _PreemptionFlag:
  """Whether to save and stop after this step: SIGTERM (TPU preemption, `kill`).

  With one process, a Python SIGTERM handler sets a flag checked once per
  step. With several, JAX's preemption service (started by
  `jax.distributed.initialize`) owns SIGTERM and picks a step every host
  reaches, so that all save together; a Python handler here would replace
  its signal handler and let each host stop at its own step, hanging the
  collective save.
  """

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested


def evaluate(eval_step, state: TrainState, batches: Iterable[Dict[str, np.ndarray]],
             mesh) -> Dict[str, float]:
  """Top-1 and top-5 accuracy (in %) over one exact pass of `batches` (host batches)."""
  totals = None
  for batch in parallel.prefetch_to_mesh(batches, mesh):
    sums = eval_step(state, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError("The eval iterator yielded no batches.")
  totals = jax.device_get(totals)
  count = max(float(totals["count"]), 1.0)
  return {"top1": 100.0 * float(totals["top1"]) / count,
          "top5": 100.0 * float(totals["top5"]) / count,
          "count": float(totals["count"])}


def _mean_metrics(history) -> Dict[str, float]:
  fetched = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains and evaluates one run; resumes from `workdir` if it holds one.

  Returns:
    Summary: 'best_top1', 'final_top1', 'final_top5', 'step' and
    'preempted' (True when SIGTERM stopped the run early).
  """
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  if config.distributed and not jax.distributed.is_initialized():
    # Before anything asks JAX for its devices (validation counts them).
    jax.distributed.initialize()
  config_lib.validate_config(config)
  data_dir = config.data_dir or None
  num_train = data.num_examples(config.dataset, "train", data_dir=data_dir)
  setup = build_setup(config, num_train_examples=num_train)
  # Only a config that builds is written to the workdir, so that a corrected
  # rerun of a failed start is not refused as another config.
  checkpoint_lib.check_workdir_config(workdir, config.to_dict(), ignore=config_lib.RESUMABLE_KEYS)
  mesh = parallel.make_data_mesh()
  init = functools.partial(create_train_state, model=setup.model, tx=setup.tx,
                           image_shape=setup.image_shape)
  state = jax.jit(init, out_shardings=parallel.replicated(mesh))(jax.random.key(config.seed))

  checkpoints = checkpoint_lib.Checkpoints(
      os.path.join(workdir, "checkpoints"), every_steps=config.checkpoint_every_steps,
      max_to_keep=config.max_checkpoints_to_keep)
  progress = {"best_top1": 0.0, "best_top1_step": 0}
  if checkpoints.latest_step() is not None:
    state, progress = checkpoints.restore(state)
    if config.console:
      print(f"Resuming {workdir} from step {checkpoints.latest_step()}.", flush=True)
  start_step = int(jax.device_get(state.step))
  if start_step >= setup.total_steps:
    checkpoints.close()
    return {"best_top1": progress["best_top1"], "final_top1": None, "final_top5": None,
            "step": start_step, "preempted": False}

  train_step = parallel.compile_train_step(
      setup.model, setup.tx, setup.objective, mesh, learning_rate_fn=setup.learning_rate_fn,
      batch_norm=config.batch_norm)
  eval_step = parallel.compile_eval_step(setup.model, mesh)
  image_size = setup.image_shape[0]
  # The stream is a fixed function of the seed: starting it at the resumed
  # step gives the batches an uninterrupted run would have seen.
  train_batches = parallel.prefetch_to_mesh(data.create_train_iterator(
      config.dataset, global_batch_size=config.batch_size, seed=config.seed,
      data_dir=data_dir, image_size=image_size, start_step=start_step), mesh)
  eval_batches = data.create_eval_iterator(  # built once, one exact pass per `for`
      config.dataset, global_batch_size=config.eval_batch_size, data_dir=data_dir,
      image_size=image_size)

  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard)
  clock = metrics_lib.Progress(setup.total_steps, start_step, config.batch_size)
  guard = (functools.partial(jax.transfer_guard, "disallow") if config.transfer_guard
           else contextlib.nullcontext)
  history = []
  last_eval: Dict[str, float] = {}
  preempted = False
  step = start_step
  with _PreemptionFlag() as flag:
    while step < setup.total_steps:
      batch = next(train_batches)
      with guard():
        state, metrics = train_step(state, batch)
      history.append(metrics)
      step += 1
      epoch = step / setup.steps_per_epoch
      is_last = step == setup.total_steps
      stop = flag.should_stop(step)
      save = is_last or stop or checkpoints.is_due(step)

      # Also at every save, so no checkpoint follows a NaN loss unchecked.
      if step % config.log_every_steps == 0 or save:
        scalars = _mean_metrics(history)
        history = []
        metrics_lib.check_finite(scalars, step)
        scalars.update(clock.rates(step))
        eta = scalars.pop("eta_sec")
        writer.write(step, {f"train_{k}": v for k, v in scalars.items()} | {"epoch": epoch})
        if config.console:
          print(clock.line(step, epoch, scalars, eta), flush=True)

      if step % setup.eval_every_steps == 0 or is_last:
        last_eval = evaluate(eval_step, state, eval_batches, mesh)
        clock.exclude_time_since_last_call()
        if last_eval["top1"] > progress["best_top1"]:
          progress = {"best_top1": last_eval["top1"], "best_top1_step": step}
        writer.write(step, {"eval_top1": last_eval["top1"], "eval_top5": last_eval["top5"],
                            "best_top1": progress["best_top1"], "epoch": epoch})
        if config.console:
          print(f"eval step {step} epoch {epoch:.2f} | top1 {last_eval['top1']:.2f} | "
                f"top5 {last_eval['top5']:.2f} | best top1 {progress['best_top1']:.2f}",
                flush=True)

      if save:
        metrics_lib.check_finite_state(state.params, step)
        checkpoints.save(step, state, progress, force=True)
      if stop and not is_last:
        preempted = True
        logging.warning("Stopped at step %d after SIGTERM; rerun the same command to resume.",
                        step)
        break
  checkpoints.wait_until_finished()
  checkpoints.close()
  writer.close()
  return {"best_top1": progress["best_top1"], "final_top1": last_eval.get("top1"),
          "final_top5": last_eval.get("top5"), "step": step, "preempted": preempted}
