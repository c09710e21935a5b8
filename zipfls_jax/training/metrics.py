"""Where a run's numbers go: JSON lines, TensorBoard and a console line.

`MetricWriter` appends one JSON object per logging event to
`<workdir>/metrics.jsonl` (what `experiments/results_sheet.py` reads) and,
when asked, writes the same scalars as TensorBoard events; TensorFlow is
imported only then, so `zipfls_jax.training` stays TensorFlow-free at import.
`check_finite` stops a run whose loss went NaN or infinite. `Progress`
formats the console line with throughput and ETA; `console` prints it;
`announce_compile` says that XLA is compiling a step and how long it took;
`PhaseTimes` splits a run's wall time into compile, train and evaluation.
Only process 0 writes files or prints. It receives numbers the steps
computed and fetched; its one device program is `check_finite_state`'s
reduction over the parameters before a save.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
from absl import logging
from etils import epath

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends scalars to `metrics.jsonl` and (optionally) TensorBoard.

  Args:
    workdir: the run's directory.
    tensorboard: also write TensorBoard event files into `workdir` itself
      (imports TensorFlow lazily), so that `tensorboard --logdir` on the
      folder above names each run after its workdir. A tag is written at
      most once per step (the eval record repeats the train record's
      `epoch` for metrics.jsonl, which TensorBoard must not show twice).
      Viewing them needs the `tensorboard` extra.
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._tb = None
    self._file = None
    self._tb_step_of_tag: Dict[str, int] = {}
    if not self._active:
      return
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._file = (epath.Path(workdir) / METRICS_FILE).open("a")
    if tensorboard:
      # Through the data package: TF stays off the accelerators and quiet.
      from zipfls_jax.data import tensorflow_setup  # pylint: disable=g-import-not-at-top
      tf = tensorflow_setup.tf
      self._tb = tf.summary.create_file_writer(os.fspath(workdir))
      self._tf = tf
      # What `tensorboard.summary.scalar` writes, without needing the
      # tensorboard package (tensorflow-cpu does not install it).
      self._scalar_metadata = tf.compat.v1.SummaryMetadata(
          plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Writes `scalars` (Python or NumPy numbers) at `step`."""
    if not self._active:
      return
    record = {"step": int(step)}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      with self._tb.as_default(step=int(step)):
        for name, value in record.items():
          if (name != "step" and isinstance(value, (int, float)) and
              self._tb_step_of_tag.get(name) != record["step"]):
            self._tb_step_of_tag[name] = record["step"]
            self._tf.summary.write(name, self._tf.constant(value, self._tf.float32),
                                   metadata=self._scalar_metadata)
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _to_python(value: Any) -> Any:
  if hasattr(value, "item"):
    value = value.item()
  return value


def check_finite(scalars: Mapping[str, Any], step: int) -> None:
  """Raises FloatingPointError naming the first NaN/inf scalar."""
  for name, value in scalars.items():
    value = _to_python(value)
    if isinstance(value, float) and not math.isfinite(value):
      raise FloatingPointError(
          f"{name} became {value} at step {step}; stopping the run. Lower the learning rate, "
          "check the inputs, or resume from the last checkpoint with a different config.")


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def check_finite_state(params, step: int) -> None:
  """Raises FloatingPointError if any parameter is NaN/inf (one device-side
  reduction, run before each save so no checkpoint holds a broken state)."""
  if not bool(_all_finite(params)):
    raise FloatingPointError(
        f"The parameters are no longer finite at step {step}; not saving them. Lower the "
        "learning rate or check the inputs, and rerun to resume from the last checkpoint.")


def console(message: str) -> None:
  """Prints one progress line, from process 0 only: every host runs the same
  loop, and N copies of each line would bury the one that matters."""
  if jax.process_index() == 0:
    print(message, flush=True)


class PhaseTimes:
  """Wall-clock seconds of a run spent per phase ('compile', 'eval', ...).

  Phases may nest; each second counts once, in the innermost phase (the
  first evaluation's compilation is 'compile', not 'eval').
  """

  def __init__(self):
    self.seconds: Dict[str, float] = collections.defaultdict(float)
    self._inner = []  # per open phase: seconds spent in phases nested in it

  @contextlib.contextmanager
  def measure(self, phase: str):
    start = time.perf_counter()
    self._inner.append(0.0)
    try:
      yield
    finally:
      elapsed = time.perf_counter() - start
      self.seconds[phase] += elapsed - self._inner.pop()
      if self._inner:
        self._inner[-1] += elapsed


def announce_compile(fn: Callable, what: str, times: PhaseTimes, *,
                     enabled: bool = True) -> Callable:
  """`fn` (a jitted step), saying on its first call that XLA compiles it.

  jax.jit traces and compiles synchronously inside the first call, which on
  a CPU can take a minute of silence; the line before and the time after
  tell the user what is happening. Later calls go straight to `fn`. The
  first call's time, counted as 'compile', also holds one dispatch of the
  (asynchronous) step, which is negligible beside compilation.
  """
  compiled = False

  @functools.wraps(fn)
  def call(*args, **kwargs):
    nonlocal compiled
    if compiled:
      return fn(*args, **kwargs)
    if enabled:
      console(f"Compiling the {what} with XLA (once per run)...")
    start = time.perf_counter()
    with times.measure("compile"):
      out = fn(*args, **kwargs)
    compiled = True
    if enabled:
      console(f"Compiled the {what} in {time.perf_counter() - start:.1f} s.")
    return out

  return call


def read_metrics(workdir: str) -> list:
  """All records of `<workdir>/metrics.jsonl`, in order (empty if none).

  Lines that are not a JSON object with a 'step' (a line cut short by a
  kill, garbage) are skipped with one warning naming the file and lines.
  """
  return _read_records(epath.Path(workdir) / METRICS_FILE)[0]


def _read_records(path) -> tuple:
  if not path.exists():
    return [], []
  records, bad = [], []
  for number, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except ValueError:
      record = None
    if isinstance(record, dict) and isinstance(record.get("step"), int):
      records.append(record)
    else:
      bad.append(number)
  if bad:
    logging.warning("Skipped %d unreadable line(s) of %s (line %s).", len(bad), path,
                    ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else ""))
  return records, bad


def drop_records_after(workdir: str, step: int) -> None:
  """Keeps only the records of `<workdir>/metrics.jsonl` up to `step`.

  A run resumed from the checkpoint of `step` logs the later steps again;
  without this, the records written between that checkpoint and a kill
  would appear twice. Unreadable lines (a record cut short by the kill)
  go too. The file is written whole, then renamed. Process 0 only.
  """
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / METRICS_FILE
  records, bad = _read_records(path)
  kept = [r for r in records if r["step"] <= step]
  if len(kept) == len(records) and not bad:
    return
  partial = path.with_name(METRICS_FILE + ".tmp")
  partial.write_text("".join(json.dumps(r) + "\n" for r in kept))
  partial.replace(path)


class Progress:
  """Throughput and ETA for the console line.

  Args:
    total_steps: steps of the whole run.
    start_step: the step this process starts (or resumes) at.
    batch_size: global images per step.
    runs_after: runs of about the same length that this process trains
      after this one (the demo's other methods); the line then also gives
      the ETA of all of them.
  """

  def __init__(self, total_steps: int, start_step: int, batch_size: int, *,
               runs_after: int = 0):
    self._total = total_steps
    self._batch_size = batch_size
    self._runs_after = runs_after
    self._last_step = start_step
    self._last_time = time.perf_counter()
    self._start_step = start_step
    self._start_time = self._last_time

  def rates(self, step: int) -> Dict[str, float]:
    """Images/s since the last call and the ETA from the run's average pace."""
    now = time.perf_counter()
    images_per_sec = (step - self._last_step) * self._batch_size / max(now - self._last_time,
                                                                        1e-9)
    self._last_step, self._last_time = step, now
    done = step - self._start_step
    eta = (now - self._start_time) / done * (self._total - step) if done > 0 else float("nan")
    return {"images_per_sec": images_per_sec, "eta_sec": eta}

  def exclude(self, seconds: float) -> None:
    """Keeps `seconds` spent on something else (an evaluation) out of the next images/s.

    The steps since the last `rates` call still count over the time they
    took: dropping the interval's start instead would divide them by only
    the time after the evaluation.
    """
    self._last_time += seconds

  def line(self, step: int, epoch: float, scalars: Mapping[str, Any],
           eta_sec: Optional[float] = None) -> str:
    parts = [f"step {step}/{self._total}", f"epoch {epoch:.2f}"]
    for name in ("loss", "ce", "zipf", "top1", "learning_rate", "images_per_sec"):
      if name in scalars:
        parts.append(f"{name} {_to_python(scalars[name]):.4g}")
    if eta_sec is not None and math.isfinite(eta_sec):
      parts.append(f"ETA {_format_seconds(eta_sec)}")
      done = step - self._start_step
      if self._runs_after and done > 0:
        # A whole run at this run's pace so far (its compile time included).
        run_sec = (time.perf_counter() - self._start_time) / done * self._total
        later = "1 later run" if self._runs_after == 1 else f"{self._runs_after} later runs"
        parts.append(f"ETA with {later} "
                     f"{_format_seconds(eta_sec + self._runs_after * run_sec)}")
    return " | ".join(parts)


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
