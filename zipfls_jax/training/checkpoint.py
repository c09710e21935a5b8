"""Checkpoints of the training state and the workdir's config guard.

`Checkpoints` wraps orbax's `CheckpointManager`: the `TrainState` (with its
PRNG key stored as raw key data, which every orbax version can write) plus a
small JSON record of loop progress (best top-1 so far). Restoring into the
shapes and shardings of a freshly built state makes a resumed run continue
exactly. `check_workdir_config` refuses to reuse a workdir written with a
different config. Paths go through `etils.epath`, so a workdir may be a
bucket (gs://...) shared by the hosts of a multi-host run. This module must
not build models or read data.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterable, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from etils import epath

from zipfls_jax.training.state import TrainState

CONFIG_FILE = "config.json"


def _to_saveable(state: TrainState) -> TrainState:
  return state.replace(rng=jax.random.key_data(state.rng))


class Checkpoints:
  """Saves every `every_steps` steps (and when forced); restores the latest.

  Args:
    directory: where the step folders go (created if missing).
    every_steps: save interval in optimizer steps; `save(force=True)` saves
      regardless (end of training, preemption).
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, *, every_steps: int, max_to_keep: int = 2):
    if every_steps <= 0:
      raise ValueError(f"checkpoint every_steps must be > 0, got {every_steps}.")
    self._every_steps = every_steps
    # Synchronous saves: a ResNet50 state takes about a second every few
    # thousand steps, and the state is donated to the next step right after
    # `save` returns, so nothing may still be reading it in the background.
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=False)
    directory = epath.Path(directory)
    if not directory.is_absolute():  # os.path.abspath would mangle gs://...
      directory = epath.Path(os.path.abspath(directory))
    self._manager = ocp.CheckpointManager(directory, options=options,
                                          item_names=("state", "progress"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def is_due(self, step: int) -> bool:
    """Whether `save` writes at `step` without being forced."""
    return step % self._every_steps == 0

  def save(self, step: int, state: TrainState, progress: Dict[str, Any], *,
           force: bool = False) -> bool:
    """Saves `state` (which is at `step`) when due or forced; returns whether it did.

    `step` is passed by the caller, who knows it, so that deciding not to
    save costs no device-to-host transfer.
    """
    if not (force or self.is_due(step)) or step in self._manager.all_steps():
      return False
    return self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(_to_saveable(state)),
                                progress=ocp.args.JsonSave(dict(progress))),
        force=True)

  def restore(self, target: TrainState) -> Tuple[TrainState, Dict[str, Any]]:
    """Restores the latest checkpoint into `target`'s shapes and shardings.

    Args:
      target: a state (or its `jax.eval_shape` with shardings attached) with
        the structure the checkpoint was written from.

    Returns:
      (state, progress) of the latest step.
    """
    step = self._manager.latest_step()
    if step is None:
      raise FileNotFoundError("No checkpoint to restore.")
    impl = jax.random.key_impl(target.rng)
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        _to_saveable(target))
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                      progress=ocp.args.JsonRestore()))
    state = restored["state"]
    rng = jax.random.wrap_key_data(state.rng, impl=impl)
    return state.replace(rng=rng), dict(restored["progress"])

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def check_workdir_config(workdir: str, config: Dict[str, Any], *,
                         ignore: Iterable[str] = ()) -> None:
  """Writes `config` to the workdir, or checks it against the one there.

  Args:
    workdir: the run's directory.
    config: the run's config as a plain (JSON-able) dict.
    ignore: top-level keys allowed to differ between the runs of one
      workdir (logging and checkpoint frequency, data location).

  Raises:
    ValueError: the workdir holds a run of a different config; the message
      lists each differing key with both values.
  """
  path = epath.Path(workdir) / CONFIG_FILE
  current = json.loads(json.dumps(config, sort_keys=True, default=str))
  if jax.process_index() == 0 and not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then renamed: a run killed mid-write leaves no truncated
    # config.json that would make every later rerun fail to parse it.
    partial = path.with_name(CONFIG_FILE + ".tmp")
    partial.write_text(json.dumps(current, indent=2, sort_keys=True))
    partial.replace(path)
    return
  if not path.exists():
    return
  previous = json.loads(path.read_text())
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
