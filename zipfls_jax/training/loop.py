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
import time
from typing import Any, Dict, Iterable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import metrics as metrics_lib
from zipfls_jax.training import methods as methods_lib
from zipfls_jax.training import optim
from zipfls_jax.training import parallel
from zipfls_jax.training import zipf_curves
from zipfls_jax.training.state import TrainState, create_train_state, init_from_pytorch

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class RunSetup:
  """The pieces of a run derived from its config (no data read, no state)."""
  model: Any
  eval_model: Any
  tx: Any
  learning_rate_fn: Any
  method: methods_lib.Method
  num_classes: int
  num_train_examples: int
  image_shape: tuple
  steps_per_epoch: int
  total_steps: int
  eval_every_steps: int
  teacher: Optional["RunSetup"] = None   # the teacher run's setup (method 'ban')

  def init_state(self, rng: jax.Array) -> TrainState:
    """A fresh train state of this run (jittable, `eval_shape`-able)."""
    return create_train_state(rng, self.model, self.tx, image_shape=self.image_shape,
                              method_state=self.method.init_state(self.num_classes,
                                                                  self.num_train_examples))


def build_setup(config: ml_collections.ConfigDict, *, num_train_examples: int) -> RunSetup:
  """Model, optimizer, schedule and method of a config (cheap: no arrays).

  Building them checks the config values they own (`validate_config` checks
  the keys and the rest), and that the method can train this model with
  this batch; each error names the config key. The eval model is the same
  network without its exits, which are trained and then dropped.
  """
  from zipfls_jax import data, models  # pylint: disable=g-import-not-at-top
  spec = data.get_dataset_spec(config.dataset)
  image_size = config.image_size or spec.image_size
  method = methods_lib.from_config(config.loss)
  method.check_run(batch_size=config.batch_size, device_count=jax.device_count(),
                   exits=config.exits, exit_type=config.exit_type)
  model_args = dict(
      num_classes=spec.num_classes, dtype=_DTYPES[config.dtype], bn_axis_name=None,
      vote_upsample=config.vote_upsample or None,
      zero_init_residual=config.zero_init_residual, **config.model_options.to_dict())
  exit_args = dict(exits=True, exit_type=config.exit_type) if config.exits else {}
  model = models.get_model(config.model, vote_exits=config.vote_exits, **model_args, **exit_args)
  eval_model = models.get_model(config.model, **model_args) if config.exits else model
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
  method = method.for_run(total_steps=total_steps, steps_per_epoch=steps_per_epoch)
  image_shape = (image_size, image_size, spec.channels)
  teacher = _teacher_setup(config, method, num_train_examples=num_train_examples)
  if teacher is not None:
    variables = jax.eval_shape(
        lambda: teacher.eval_model.init(jax.random.key(0), jnp.zeros((1, *image_shape)),
                                        train=False))
    method = method.with_teacher(teacher.eval_model, {
        "params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
  return RunSetup(model=model, eval_model=eval_model, tx=tx, learning_rate_fn=learning_rate_fn,
                  method=method, num_classes=spec.num_classes,
                  num_train_examples=num_train_examples, image_shape=image_shape,
                  steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                  eval_every_steps=eval_every_steps, teacher=teacher)


def _teacher_setup(config: ml_collections.ConfigDict, method: methods_lib.Method, *,
                   num_train_examples: int) -> Optional[RunSetup]:
  """The setup of `config.teacher.workdir`'s run, checked against this run; None without.

  Cheap: reads the teacher's config.json and lists its checkpoints. A teacher
  trained by 'ban' builds its own teacher's setup in turn (only configs are
  read), since its checkpoints hold that teacher too.
  """
  workdir = config.teacher.workdir
  if not isinstance(method, methods_lib.BAN):
    if workdir:
      raise ValueError(f"config.teacher.workdir={workdir!r} is set, but "
                       f"config.loss.method={method.name!r} has no teacher; use "
                       "config.loss.method='ban' or leave config.teacher.workdir empty.")
    return None
  if not workdir:
    raise ValueError("config.loss.method='ban' distils a trained teacher: set "
                     "config.teacher.workdir to that run's workdir.")
  saved = checkpoint_lib.read_workdir_config(workdir)
  if saved is None:
    raise FileNotFoundError(f"config.teacher.workdir: {workdir!r} holds no run (no "
                            f"{checkpoint_lib.CONFIG_FILE}).")
  teacher_config = config_lib.base_config()
  teacher_config.update(saved)
  if teacher_config.dataset != config.dataset:
    raise ValueError(f"config.teacher.workdir: the teacher was trained on "
                     f"{teacher_config.dataset!r}, this run trains on {config.dataset!r}; a "
                     "teacher must know the same classes.")
  if not checkpoint_lib.has_checkpoint(workdir):
    raise FileNotFoundError(f"config.teacher.workdir: {workdir!r} has no checkpoint yet; "
                            "train the teacher first.")
  teacher = build_setup(teacher_config, num_train_examples=num_train_examples)
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  classes = data.get_dataset_spec(config.dataset).num_classes
  if teacher.num_classes != classes:
    raise ValueError(f"config.teacher.workdir: the teacher has {teacher.num_classes} classes, "
                     f"this run's {config.dataset!r} has {classes}.")
  return teacher


def load_teacher(setup: RunSetup, workdir: str, sharding) -> Dict[str, Any]:
  """The teacher's {'params', 'batch_stats'} from its latest checkpoint, placed with `sharding`."""
  teacher = setup.teacher
  checkpoints = checkpoint_lib.Checkpoints(
      os.path.join(workdir, checkpoint_lib.CHECKPOINTS_DIR), every_steps=1)
  try:
    restored = checkpoints.restore(
        checkpoint_lib.abstract_state(teacher.init_state, jax.random.key(0), sharding))
  finally:
    checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f"config.teacher.workdir: no checkpoint of {workdir!r} restores.")
  _, state, _ = restored
  return {"params": state.params, "batch_stats": state.batch_stats}


class _SigtermFlag:
  """Whether SIGTERM (a preemption, `kill`) arrived, with one process.

  With several processes, JAX's preemption service (started by
  `jax.distributed.initialize`) owns SIGTERM and orbax's
  `reached_preemption` names a step every host reaches, so that all save
  together; a Python handler here would replace its signal handler and let
  each host stop at its own step, hanging the collective save. With one
  process and no distributed runtime that service does not exist and
  `reached_preemption` is always False, so this handler covers SIGTERM.
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


def _env_int(name: str):
  value = os.environ.get(name, "")
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize` from the config's keys or JAX's variables.

  The coordinator address, process count and process id come from
  `config.coordinator_address`, `config.num_processes` and
  `config.process_id` when set, else from JAX_COORDINATOR_ADDRESS,
  JAX_NUM_PROCESSES and JAX_PROCESS_ID, else from JAX's cluster detection
  (Cloud TPU, SLURM, Open MPI). Does nothing unless `config.distributed`.

  Raises:
    ValueError: in one line, when they are neither given nor detectable.
  """
  if not config.distributed or jax.distributed.is_initialized():
    return
  address = config.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = config.num_processes or _env_int("JAX_NUM_PROCESSES")
  process_id = config.process_id if config.process_id >= 0 else _env_int("JAX_PROCESS_ID")
  try:
    jax.distributed.initialize(address, num_processes, process_id,
                               heartbeat_timeout_seconds=config.heartbeat_timeout_seconds)
  except ValueError as error:
    raise ValueError(
        f"config.distributed=True, but JAX found no cluster to join ({error}). On each process "
        "set --config.coordinator_address=HOST:PORT (process 0's), --config.num_processes=N "
        "and --config.process_id=I, or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
        "JAX_PROCESS_ID.") from None


def _topology() -> Dict[str, int]:
  return {"process_count": jax.process_count(), "device_count": jax.device_count()}


def _check_topology(saved: Dict[str, Any], allow: bool) -> None:
  """Refuses to resume on another process or device count, unless allowed.

  The train stream is split by process (each reads its own shard, shuffled
  by its own seed), so another process count gives other batches; another
  device count changes the order of float sums (and the BatchNorm groups
  with batch_norm='per_device').
  """
  current = _topology()
  changed = [f"{k} {saved[k]} -> {current[k]}" for k in current
             if k in saved and saved[k] != current[k]]
  if changed and not allow:
    raise ValueError(
        f"The checkpoint was written with another topology ({', '.join(changed)}); resuming "
        "would not continue the same run (other batches and sums). Resume on the same "
        "topology, or set --config.allow_topology_change=True to go on anyway.")
  if changed:
    logging.warning("Resuming on another topology (%s): the rest of the run differs from an "
                    "uninterrupted one.", ", ".join(changed))


def evaluate(eval_step, state: TrainState, batches: Iterable[Dict[str, np.ndarray]],
             mesh) -> Dict[str, Any]:
  """Top-1 and top-5 accuracy (in %) over one exact pass of `batches`.

  Also 'count' and 'ranked', the totals of the ranked predictions
  (`zipfls_jax.zipf_law.RankedProbabilitySums`, NumPy).
  """
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
          "count": float(totals["count"]), "ranked": totals["ranked"]}


def _mean_metrics(history) -> Dict[str, float]:
  fetched = jax.device_get(history)
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _pending_to_json(history) -> list:
  """The per-step metrics not yet logged, for the checkpoint of a SIGTERM stop."""
  return [{k: float(v) for k, v in m.items()} for m in jax.device_get(history)]


def _pending_from_json(pending) -> list:
  # float32 again, as the step returned them: the resumed run then averages
  # exactly what an uninterrupted run would have.
  return [{k: np.float32(v) for k, v in m.items()} for m in pending]


def _abstract_batch(mesh, batch_size: int, image_shape, *, mask: bool,
                    needs: methods_lib.DataNeeds = methods_lib.DataNeeds()) -> Dict[str, Any]:
  sharding = parallel.batch_sharded(mesh)

  def array(shape, dtype):
    return jax.ShapeDtypeStruct((batch_size, *shape), dtype, sharding=sharding)

  batch = {"image": array(image_shape, jnp.float32), "label": array((), jnp.int32)}
  if needs.views == 2:
    batch["image2"] = array(image_shape, jnp.float32)
  if needs.friends or needs.index:
    batch["index"] = array((), jnp.int32)
  if mask:
    batch["mask"] = array((), jnp.bool_)
  return batch


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       runs_after: int = 0) -> Dict[str, Any]:
  """Trains and evaluates one run; resumes from `workdir` if it holds one.

  Args:
    config: the run's config (every key: `zipfls_jax.training.config`).
    workdir: where checkpoints, metrics and the config go.
    runs_after: runs of about this length the caller trains next (the
      demo's other methods), for the console's overall ETA.

  Everything that can refuse the run (config values, dataset, data on disk,
  model, a trace of the steps, a writable workdir) is checked before
  anything is written, so a failed start leaves nothing that blocks the
  corrected command.

  Returns:
    Summary: 'best_top1', 'final_top1', 'final_top5', 'step',
    'preempted' (True when SIGTERM stopped the run early) and 'seconds'
    (wall time of this call: 'setup' before the first step, then
    'compile' and 'eval' (exclusive of each other), and 'total').
  """
  start_time = time.perf_counter()
  times = metrics_lib.PhaseTimes()
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  # Before anything asks JAX for its devices (validation counts them).
  initialize_distributed(config)
  config_lib.validate_config(config)
  data_dir = config.data_dir or None
  num_train = data.num_examples(config.dataset, "train", data_dir=data_dir)
  setup = build_setup(config, num_train_examples=num_train)
  mesh = parallel.make_data_mesh()
  repl = parallel.replicated(mesh)
  init = setup.init_state
  rng = jax.random.key(config.seed)
  abstract = checkpoint_lib.abstract_state(init, rng, repl)
  train_step = parallel.compile_train_step(
      setup.model, setup.tx, setup.method, mesh, learning_rate_fn=setup.learning_rate_fn,
      steps_per_epoch=setup.steps_per_epoch, batch_norm=config.batch_norm)
  eval_step = parallel.compile_eval_step(setup.eval_model, mesh)
  needs = setup.method.data_needs
  # Tracing both steps raises every trace-time check (model, loss and
  # target arguments) now; the traces are cached for the real calls.
  jax.eval_shape(train_step, abstract,
                 _abstract_batch(mesh, config.batch_size, setup.image_shape, mask=False,
                                 needs=needs))
  jax.eval_shape(eval_step, abstract,
                 _abstract_batch(mesh, config.eval_batch_size, setup.image_shape, mask=True))
  # A class-paired stream needs random access to the data: checked now, not
  # when the stream starts after the workdir is written.
  data.check_random_access(config.dataset, friends=needs.friends, data_dir=data_dir)
  checkpoint_lib.check_workdir(workdir)
  checkpoint_lib.check_workdir_config(workdir, config.to_dict(), ignore=config_lib.RESUMABLE_KEYS)

  checkpoints = checkpoint_lib.Checkpoints(
      os.path.join(workdir, checkpoint_lib.CHECKPOINTS_DIR),
      every_steps=config.checkpoint_every_steps, max_to_keep=config.max_checkpoints_to_keep)
  progress = {"best_top1": 0.0, "best_top1_step": 0}
  restored = checkpoints.restore(abstract)
  if restored is None:
    initialise = metrics_lib.announce_compile(jax.jit(init, out_shardings=repl),
                                              "initialisation", times, enabled=config.console)
    state = initialise(rng)
    start_step = 0
    if setup.teacher is not None:
      state = state.replace(method_state=dict(
          state.method_state, teacher=load_teacher(setup, config.teacher.workdir, repl)))
      if config.console:
        metrics_lib.console(f"Distilling the teacher {config.teacher.workdir} "
                            f"({type(setup.teacher.model).__name__}).")
    if config.init_from:
      state, kept = init_from_pytorch(state, setup.model, setup.tx, config.init_from,
                                      sharding=repl)
      message = f"Initialised from {config.init_from}" + (
          f"; {', '.join(kept)} kept their fresh initialisation (the file has no weights for "
          f"them: heads of another class count than the dataset's {setup.num_classes}, or "
          "exits PyTorch models lack)." if kept else ".")
      logging.info(message)
      if config.console:
        metrics_lib.console(message)
  else:
    start_step, state, progress = restored
    _check_topology(progress, config.allow_topology_change)
    if config.console:
      metrics_lib.console(f"Resuming {workdir} from step {start_step}.")
  # The step's metrics not logged before a SIGTERM stop, to average exactly
  # as an uninterrupted run does.
  history = _pending_from_json(progress.pop("pending_train_metrics", []))
  progress = {k: progress[k] for k in ("best_top1", "best_top1_step")}
  # Records written after the restored checkpoint (a run killed before its
  # next save) would be logged again: drop them.
  metrics_lib.drop_records_after(workdir, start_step)
  if start_step >= setup.total_steps:
    checkpoints.close()
    return {"best_top1": progress["best_top1"], "final_top1": None, "final_top5": None,
            "step": start_step, "preempted": False,
            "seconds": {"total": time.perf_counter() - start_time}}

  train_step = metrics_lib.announce_compile(train_step, "train step", times,
                                            enabled=config.console)
  eval_step = metrics_lib.announce_compile(eval_step, "eval step", times, enabled=config.console)
  image_size = setup.image_shape[0]
  # The stream is a fixed function of the seed: starting it at the resumed
  # step gives the batches an uninterrupted run would have seen.
  train_batches = parallel.prefetch_to_mesh(data.create_train_iterator(
      config.dataset, global_batch_size=config.batch_size, seed=config.seed,
      data_dir=data_dir, image_size=image_size, start_step=start_step,
      friends=needs.friends, views=needs.views, with_index=needs.index), mesh)
  eval_batches = data.create_eval_iterator(  # built once, one exact pass per `for`
      config.dataset, global_batch_size=config.eval_batch_size, data_dir=data_dir,
      image_size=image_size)

  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard)
  clock = metrics_lib.Progress(setup.total_steps, start_step, config.batch_size,
                               runs_after=runs_after)
  guard = (functools.partial(jax.transfer_guard, "disallow") if config.transfer_guard
           else contextlib.nullcontext)
  last_eval: Dict[str, float] = {}
  preempted = False
  step = start_step
  # Everything before the first step except the initialisation's compile.
  times.seconds["setup"] = time.perf_counter() - start_time - times.seconds["compile"]
  with _SigtermFlag() as sigterm:
    while step < setup.total_steps:
      batch = next(train_batches)
      with guard():
        state, metrics = train_step(state, batch)
      history.append(metrics)
      step += 1
      epoch = step / setup.steps_per_epoch
      is_last = step == setup.total_steps
      # One process: our SIGTERM flag; several: the step orbax's
      # reached_preemption names, the same on every host.
      stop = (sigterm.requested or checkpoints.reached_preemption(step)) and not is_last
      save = is_last or stop or checkpoints.should_save(step)

      # Also at every interval save, so no checkpoint follows a NaN loss
      # unchecked; but not for a SIGTERM stop alone: its unlogged steps go
      # into its checkpoint, and the resumed run logs what an uninterrupted
      # one would (same steps, same averages).
      if step % config.log_every_steps == 0 or is_last or checkpoints.on_interval(step):
        scalars = _mean_metrics(history)
        history = []
        metrics_lib.check_finite(scalars, step)
        scalars.update(clock.rates(step))
        eta = scalars.pop("eta_sec")
        writer.write(step, {f"train_{k}": v for k, v in scalars.items()} | {"epoch": epoch})
        if config.console:
          metrics_lib.console(clock.line(step, epoch, scalars, eta))

      if step % setup.eval_every_steps == 0 or is_last:
        eval_start = time.perf_counter()
        with times.measure("eval"):
          last_eval = evaluate(eval_step, state, eval_batches, mesh)
          zipf_scalars = zipf_curves.record_evaluation(workdir, step, last_eval["ranked"])
        clock.exclude(time.perf_counter() - eval_start)
        if last_eval["top1"] > progress["best_top1"]:
          progress = {"best_top1": last_eval["top1"], "best_top1_step": step}
        writer.write(step, {"eval_top1": last_eval["top1"], "eval_top5": last_eval["top5"],
                            "best_top1": progress["best_top1"], "epoch": epoch} | zipf_scalars)
        if config.console:
          metrics_lib.console(
              f"eval step {step} epoch {epoch:.2f} | top1 {last_eval['top1']:.2f} | "
              f"top5 {last_eval['top5']:.2f} | best top1 {progress['best_top1']:.2f}")

      if save:
        metrics_lib.check_finite_state(state.params, step)
        # A failed save stops the run (CheckpointSaveError, one line): the
        # cause (a full disk, lost storage) rarely clears by itself.
        checkpoints.save(step, state, {**progress, **_topology(),
                                       "pending_train_metrics": _pending_to_json(history)})
      if stop:
        preempted = True
        logging.warning("Stopped at step %d after SIGTERM; rerun the same command to resume.",
                        step)
        break
  checkpoints.wait_until_finished()
  checkpoints.close()
  writer.close()
  return {"best_top1": progress["best_top1"], "final_top1": last_eval.get("top1"),
          "final_top5": last_eval.get("top5"), "step": step, "preempted": preempted,
          "seconds": dict(times.seconds, total=time.perf_counter() - start_time)}
