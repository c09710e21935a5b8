"""Where a run's numbers go: JSON lines, TensorBoard and a console line.

`MetricWriter` appends one JSON object per logging event to
`<workdir>/metrics.jsonl` (what `experiments/results_sheet.py` reads) and,
when asked, writes the same scalars as TensorBoard events; TensorFlow is
imported only then, so `zipfls_jax.training` stays TensorFlow-free at import.
`check_finite` stops a run whose loss went NaN or infinite. `Progress`
formats the console line with throughput and ETA. Only process 0 writes.
It receives numbers the steps computed and fetched; its one device program
is `check_finite_state`'s reduction over the parameters before a save.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
from etils import epath

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
  """Appends scalars to `metrics.jsonl` and (optionally) TensorBoard.

  Args:
    workdir: the run's directory.
    tensorboard: also write TensorBoard event files under
      `<workdir>/tensorboard` (imports TensorFlow lazily).
  """

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self._active = jax.process_index() == 0
    self._tb = None
    self._file = None
    if not self._active:
      return
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    self._file = (epath.Path(workdir) / METRICS_FILE).open("a")
    if tensorboard:
      # First, so that TensorFlow stays off the accelerators (as in the pipelines).
      # pylint: disable-next=g-import-not-at-top,unused-import
      from zipfls_jax.data import tensorflow_setup  # noqa: F401
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
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
          if name != "step" and isinstance(value, (int, float)):
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


def read_metrics(workdir: str) -> list:
  """All records of `<workdir>/metrics.jsonl`, in order (empty if none)."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Progress:
  """Throughput and ETA for the console line.

  Args:
    total_steps: steps of the whole run.
    start_step: the step this process starts (or resumes) at.
    batch_size: global images per step.
  """

  def __init__(self, total_steps: int, start_step: int, batch_size: int):
    self._total = total_steps
    self._batch_size = batch_size
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

  def exclude_time_since_last_call(self) -> None:
    """Keeps time spent since the last `rates` call (evaluation) out of images/s."""
    self._last_time = time.perf_counter()

  def line(self, step: int, epoch: float, scalars: Mapping[str, Any],
           eta_sec: Optional[float] = None) -> str:
    parts = [f"step {step}/{self._total}", f"epoch {epoch:.2f}"]
    for name in ("loss", "ce", "zipf", "top1", "learning_rate", "images_per_sec"):
      if name in scalars:
        parts.append(f"{name} {_to_python(scalars[name]):.4g}")
    if eta_sec is not None and math.isfinite(eta_sec):
      parts.append(f"ETA {_format_seconds(eta_sec)}")
    return " | ".join(parts)


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
