"""Checkpoints of the training state, and the workdir's checks.

`Checkpoints` wraps orbax's `CheckpointManager`: the `TrainState` (with its
PRNG key stored as raw key data, which every orbax version can write) plus a
small JSON record of loop progress (best top-1 so far, the topology, and a
checksum of the state). Orbax decides when a save is due
(`FixedIntervalPolicy`) and when every host has reached the step at which a
preemption is handled (`reached_preemption`). Restoring goes into the
shapes and shardings of an abstract state (`jax.eval_shape`), so the real
state is never built first, and falls back to the newest checkpoint that
restores cleanly when a later one is damaged (its checksum is checked too).
`check_workdir` and `check_workdir_config` refuse an unusable workdir before
anything is written. Paths go through `etils.epath`, so a workdir may be a
bucket (gs://...) shared by the hosts of a multi-host run. This module must
not build models or read data.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from zipfls_jax.training.state import TrainState

CONFIG_FILE = "config.json"
CHECKPOINTS_DIR = "checkpoints"
# Where a damaged step folder is moved (inside the checkpoints folder, under a
# name orbax does not read as a step) so the step can be saved again.
_SET_ASIDE_PREFIX = "damaged-"


def _to_saveable(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng))


def _as_words(x: jax.Array) -> jax.Array:
  """The bits of `x` as uint32 words (narrower types widened, wider ones split)."""
  itemsize = jnp.dtype(x.dtype).itemsize
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  if itemsize == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if itemsize in (1, 2):
    unsigned = jnp.uint8 if itemsize == 1 else jnp.uint16
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)
  return jax.lax.bitcast_convert_type(x, jnp.uint32)  # 8 bytes -> (..., 2) words


@jax.jit
def _checksum_words(tree) -> jax.Array:
  # Two sums of the state's bits modulo 2**32: a plain one and one weighted
  # by (2 * position + 1), each leaf's words times (2 * leaf index + 1).
  # Both weights are odd, so any single flipped bit (a change of +-2**k)
  # changes both sums; the weighted one also sees swapped or shifted values.
  # One pass over the state, on the devices. Leaves of the same word count
  # (a layer's parameters and their momentum, the BatchNorm vectors of one
  # width) are summed as one stacked array: the same sums (products and sums
  # modulo 2**32 can be regrouped freely), in a program with one reduction
  # per distinct size instead of one per leaf: XLA compiled a ResNet-50
  # state's per-leaf program in 90-108 s on a CPU, this one in 2-3 s
  # (benchmarks/checkpoint_checksum.py).
  by_size = collections.defaultdict(list)
  for index, leaf in enumerate(jax.tree.leaves(tree)):
    words = _as_words(leaf).ravel()
    by_size[words.size].append((2 * index + 1, words))
  plain = jnp.zeros((), jnp.uint32)
  weighted = jnp.zeros((), jnp.uint32)
  for size, members in by_size.items():
    leaf_weights = jnp.asarray(np.array([weight for weight, _ in members], np.uint32))
    words = jnp.stack([leaf_words for _, leaf_words in members])
    position_weights = 2 * jnp.arange(size, dtype=jnp.uint32) + 1
    plain += jnp.sum(leaf_weights * jnp.sum(words, axis=1, dtype=jnp.uint32), dtype=jnp.uint32)
    weighted += jnp.sum(leaf_weights * jnp.sum(words * position_weights, axis=1, dtype=jnp.uint32),
                        dtype=jnp.uint32)
  return jnp.stack([plain, weighted])


def state_checksum(state: TrainState) -> str:
  """A 64-bit checksum of every bit of `state`, as 16 hex digits.

  Computed on the devices (one reduction over the state); only the 8-byte
  result comes to the host.
  """
  plain, weighted = (int(v) for v in jax.device_get(_checksum_words(_to_saveable(state))))
  return f"{plain:08x}{weighted:08x}"


def abstract_state(init_fn, rng: jax.Array, sharding) -> TrainState:
  """Shapes, dtypes and `sharding` of `init_fn(rng)`, computed without running it."""
  shapes = jax.eval_shape(init_fn, rng)
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes)


@dataclasses.dataclass
class _StepInfo:
  """The step a save policy is asked about (orbax's PolicyCheckpointInfo)."""
  step: int
  metrics: Optional[Dict[str, Any]] = None
  time: datetime.datetime = dataclasses.field(
      default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))


def _array_registry():
  """Orbax's type handlers, its array handler without replica-parallel writes
  when there is one process.

  Replica-parallel saving splits each replicated array into one slice per
  device so that several hosts share the writing; every slice shape is a
  small XLA program compiled at the first save (about 4 s for the tiny
  CIFAR ResNet on 8 CPU devices, over a third of a short run), and one
  process writes everything anyway. With several processes, orbax's
  default stays. The files are the same either way.
  """
  default = ocp.type_handlers.get_type_handler(jax.Array)
  arrays = ocp.type_handlers.ArrayHandler(
      use_replica_parallel=None if jax.process_count() > 1 else False,
      array_metadata_store=getattr(default, "_array_metadata_store", None))
  others = [(ty, ocp.type_handlers.get_type_handler(ty))
            for ty in (int, float, bytes, np.number, np.ndarray, str)]
  return ocp.type_handlers.create_type_handler_registry((jax.Array, arrays), *others)


def _is_closed_loop_callback(unraisable) -> bool:
  """Whether an unraisable error is asyncio refusing a callback on a closed loop."""
  if not (isinstance(unraisable.exc_value, RuntimeError)
          and str(unraisable.exc_value) == "Event loop is closed"):
    return False
  frame = getattr(unraisable, "exc_traceback", None)
  while frame is not None and frame.tb_next is not None:
    frame = frame.tb_next
  code = frame.tb_frame.f_code if frame is not None else None
  return (code is not None and code.co_name == "_check_closed"
          and os.path.basename(code.co_filename) == "base_events.py")


def _closed_event_loop_filter(previous):
  """An unraisable hook: drops asyncio's closed-loop errors, passes the rest to `previous`."""

  def hook(unraisable):
    if not _is_closed_loop_callback(unraisable):
      previous(unraisable)

  hook.drops_closed_event_loops = True
  return hook


def _drop_closed_event_loop_errors() -> None:
  """Drops the "Event loop is closed" errors that a failed orbax restore or save leaves.

  When a damaged checkpoint fails to restore (or a save fails, e.g. on a
  full disk), orbax closes the operation's event loop while tensorstore's
  threads still complete its other reads or writes; each completion then
  reports an unraisable `RuntimeError: Event loop is closed` (a traceback
  of about eight lines, several interleaved), possibly well after the
  failure has been handled. `Checkpoints` already says in one line which
  step failed and why. So, from the first save or restore on, the process's
  unraisable hook drops exactly these (that message, raised by asyncio's
  closed-loop check) and passes every other error to the hook installed
  before. Called again, it reinstalls itself only if something replaced it.
  """
  if not getattr(sys.unraisablehook, "drops_closed_event_loops", False):
    sys.unraisablehook = _closed_event_loop_filter(sys.unraisablehook)


class CorruptCheckpointError(ValueError):
  """No checkpoint restores (each is damaged, or its checksum does not match)."""


class CheckpointSaveError(OSError):
  """A save failed; the run stops (see `Checkpoints.save`)."""


def _first_line(error: BaseException) -> str:
  """`Type: message` cut to one short line (tensorstore appends its whole spec)."""
  text = str(error).strip().splitlines()
  text = text[0].split(" [tensorstore_spec")[0] if text else ""
  if len(text) > 160:
    text = text[:157] + "..."
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Checkpoints:
  """Saves when orbax's policy says so (or when told); restores the newest good one.

  Args:
    directory: where the step folders go (created if missing).
    every_steps: save interval in optimizer steps; `should_save` is also
      True at the step where every host has reached a preemption (several
      processes). `save` always saves: the loop calls it when `should_save`
      says so and at the end of training or on SIGTERM.
    max_to_keep: how many recent checkpoints to keep (keep two or more, so
      that a damaged latest one has an older one to fall back to).
  """

  def __init__(self, directory: str, *, every_steps: int, max_to_keep: int = 2):
    if every_steps <= 0:
      raise ValueError(f"checkpoint every_steps must be > 0, got {every_steps}.")
    policies = ocp.checkpoint_managers
    self._interval = policies.FixedIntervalPolicy(every_steps)
    # What `save_interval_steps` builds, less its `InitialSavePolicy`, which
    # would also save after the first step of every fresh run.
    policy = policies.AnySavePolicy([self._interval,
                                     policies.PreemptionCheckpointingPolicy()])
    # Synchronous saves: a ResNet50 state takes about a second every few
    # thousand steps, and the state is donated to the next step right after
    # `save` returns, so nothing may still be reading it in the background.
    # Temporary folders of saves cut short by a kill are removed at start.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False,
        save_decision_policy=policy, cleanup_tmp_directories=True)
    directory = epath.Path(directory)
    if not directory.is_absolute():  # os.path.abspath would mangle gs://...
      directory = epath.Path(os.path.abspath(directory))
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers={"state": ocp.PyTreeCheckpointHandler(
                           type_handler_registry=_array_registry()),
                       "progress": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    """Whether `step` is a save step: on the interval, or a preemption step."""
    return self._manager.should_save(step)

  def on_interval(self, step: int) -> bool:
    """Whether `step` is on the save interval (`should_save` less preemption)."""
    return self._interval.should_save(_StepInfo(step), [], context=None)

  def reached_preemption(self, step: int) -> bool:
    """Whether every process has reached the step chosen to save at after a
    SIGTERM (JAX's preemption service; always False with one process and no
    `jax.distributed.initialize`)."""
    return self._manager.reached_preemption(step)

  def save(self, step: int, state: TrainState, progress: Dict[str, Any]) -> None:
    """Saves `state` (which is at `step`) with `progress` and the state's checksum.

    `step` is passed by the caller, who knows it, so that deciding costs no
    device-to-host transfer.
    """
    if step in self._manager.all_steps():
      return
    progress = dict(progress, checksum=state_checksum(state))
    previous = self.latest_step()
    _drop_closed_event_loop_errors()
    try:
      self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.PyTreeSave(_to_saveable(state)),
                                  progress=ocp.args.JsonSave(progress)),
          force=True)
    except Exception as error:  # pylint: disable=broad-except
      # Whatever the storage raised (a full disk, lost permissions, a
      # network error), the run cannot go on safely; orbax's partial folder
      # is removed when the next run starts.
      raise CheckpointSaveError(
          f"Saving the checkpoint of step {step} in {self.directory} failed "
          f"({_first_line(error)}). The last complete checkpoint is step {previous}; fix the "
          "storage (e.g. free space) and rerun the same command to resume from it.") from error

  def _restore_step(self, step: int, target: TrainState) -> Tuple[TrainState, Dict[str, Any]]:
    impl = []
    jax.eval_shape(lambda key: impl.append(jax.random.key_impl(key)), target.rng)
    sharding = getattr(target.rng, "sharding", None)
    rng_data = jax.eval_shape(jax.random.key_data, target.rng)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        target.replace(rng=jax.ShapeDtypeStruct(rng_data.shape, rng_data.dtype,
                                                sharding=sharding)))
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(
                abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract)),
            progress=ocp.args.JsonRestore()))
    progress = dict(restored["progress"])
    state = restored["state"].replace(
        rng=jax.random.wrap_key_data(restored["state"].rng, impl=impl[0]))
    expected = progress.pop("checksum", None)
    if expected is not None and state_checksum(state) != expected:
      raise ValueError("the restored state does not match the checksum saved with it")
    return state, progress

  def restore(self, target: TrainState) -> Optional[Tuple[int, TrainState, Dict[str, Any]]]:
    """Restores the newest checkpoint that restores cleanly into `target`.

    A checkpoint that fails to restore (damaged or missing files, checksum
    mismatch) is reported in one warning line and moved aside (to
    `damaged-<step>`) once an older one has restored, so that training
    continues from there and can save that step again.

    Args:
      target: the state's `abstract_state` (or a real state): the structure,
        shapes and shardings to restore into.

    Returns:
      (step, state, progress), or None when there is no checkpoint.

    Raises:
      CorruptCheckpointError: no checkpoint restores; nothing is moved (a
        code change that altered the state's structure would fail them all).
    """
    _drop_closed_event_loop_errors()
    failures = []
    for step in reversed(self.all_steps()):
      try:
        state, progress = self._restore_step(step, target)
      except Exception as error:  # pylint: disable=broad-except
        # Damaged files surface as many types (zstd, tensorstore, KeyError,
        # JSON errors); each one is reported, and an older step is tried.
        failures.append(step)
        logging.warning("Checkpoint step %d in %s cannot be restored (%s); trying an older "
                        "one.", step, self.directory, _first_line(error))
        continue
      for bad in failures:
        self._set_aside(bad)
      if failures:
        logging.warning("Resuming from step %d; the damaged step(s) %s were moved to %s.",
                        step, failures, self.directory / f"{_SET_ASIDE_PREFIX}<step>")
      return step, state, progress
    if failures:
      raise CorruptCheckpointError(
          f"No checkpoint in {self.directory} can be restored (steps {sorted(failures)}; the "
          "warnings above say why). Move them away to start afresh, or use a new --workdir.")
    return None

  def _set_aside(self, step: int) -> None:
    if jax.process_index() == 0:
      source = self.directory / str(step)
      target = self.directory / f"{_SET_ASIDE_PREFIX}{step}"
      if target.exists():
        target.rmtree()
      source.rename(target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"zipfls set aside checkpoint {step}")
    self._manager.reload()

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def check_workdir(workdir: str) -> None:
  """Refuses, in one line naming the path, a workdir that cannot be written.

  Run before anything is written: the workdir (or its `checkpoints`) being a
  file, or a folder this process cannot create files in. Every process
  checks its own access (all write checkpoints).

  Raises:
    NotADirectoryError, PermissionError (both OSError).
  """
  path = epath.Path(workdir)
  for folder in (path, path / CHECKPOINTS_DIR):
    if folder.exists() and not folder.is_dir():
      raise NotADirectoryError(f"{folder} is a file, not a folder; give --workdir a folder "
                               "(new or of this run).")
  probe = path / f".write-test-{jax.process_index()}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except OSError as error:
    raise PermissionError(f"The workdir {workdir} is not writable ({error.strerror or error}); "
                          "give a --workdir this user can write to.") from None


def has_checkpoint(workdir: str) -> bool:
  """Whether the workdir holds a saved step (a numbered folder in checkpoints/); cheap."""
  folder = epath.Path(workdir) / CHECKPOINTS_DIR
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def read_workdir_config(workdir: str) -> Optional[Dict[str, Any]]:
  """The workdir's config.json as a dict, or None if it has none.

  Raises:
    ValueError: the file is not valid JSON (named in the message).
  """
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as error:
    raise ValueError(f"{path} is not valid JSON ({error}); it was not written by this "
                     "code. Restore it, or delete it to start this workdir afresh.") from None


def check_workdir_config(workdir: str, config: Dict[str, Any], *,
                         ignore: Iterable[str] = ()) -> None:
  """Writes `config` to the workdir, or checks it against the one there.

  Args:
    workdir: the run's directory.
    config: the run's config as a plain (JSON-able) dict.
    ignore: top-level keys allowed to differ between the runs of one
      workdir (logging and checkpoint frequency, data location).

  Raises:
    ValueError: the workdir holds a run of a different config (the message
      lists each differing key with both values), or its config.json is not
      valid JSON.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  current = json.loads(json.dumps(config, sort_keys=True, default=str))
  previous = read_workdir_config(workdir)
  if previous is None:
    if jax.process_index() == 0:
      path.parent.mkdir(parents=True, exist_ok=True)
      # Written whole, then renamed: a run killed mid-write leaves no
      # truncated config.json that would make every later rerun fail.
      partial = path.with_name(CONFIG_FILE + ".tmp")
      partial.write_text(json.dumps(current, indent=2, sort_keys=True))
      partial.replace(path)
    return
  ignore = set(ignore)
  diffs = []
  for key in sorted(set(previous) | set(current)):
    if key in ignore:
      continue
    for name, old, new in _flat_diff(key, previous.get(key), current.get(key)):
      diffs.append(f"  {name}: workdir has {old!r}, this run has {new!r}")
  if diffs:
    raise ValueError(
        f"The workdir {workdir!r} holds a run with a different config, so it cannot be "
        "resumed with this one:\n" + "\n".join(diffs) +
        "\nUse a new --workdir, or rerun with the workdir's config "
        f"({path}).")


def _flat_diff(name: str, old: Any, new: Any):
  if isinstance(old, dict) and isinstance(new, dict):
    for key in sorted(set(old) | set(new)):
      yield from _flat_diff(f"{name}.{key}", old.get(key), new.get(key))
  elif old != new:
    yield name, old, new
