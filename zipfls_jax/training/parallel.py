"""Data parallelism: a one-axis device mesh, batch placement, compiled steps.

Every device of every process is on the mesh's 'data' axis. The default
path is `jax.jit` of the global step with the batch sharded and the state
replicated: BatchNorm statistics are then those of the global batch
(synchronised). `batch_norm='per_device'` compiles the per-device program
under `jax.shard_map` instead, with each device normalising by its own
shard, as in the authors' multi-GPU runs. `pmap_train_step` serves users of
`jax.pmap`. `prefetch_to_mesh` places the next batches on the devices while
a step runs. The state is donated to every compiled step; nothing returns to
the host inside a step. This module must not read data or write files.
"""
from __future__ import annotations

import collections
import itertools
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from zipfls_jax.training import methods as methods_lib
from zipfls_jax.training import step as step_lib

DATA_AXIS = "data"
BATCH_NORM_MODES = ("sync", "per_device")


def make_data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-dimensional mesh over `devices` (default: all devices, all hosts)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
  """Host-local numpy batch -> global arrays split over the mesh's data axis.

  Each process passes its own slice of the global batch (as the input
  pipelines yield it); the local batch must divide by the local devices.
  """
  sharding = batch_sharded(mesh)
  local_devices = len(mesh.local_devices)
  out = {}
  for name, value in batch.items():
    value = np.asarray(value)
    if value.shape[0] % local_devices:
      raise ValueError(f"batch[{name!r}] has {value.shape[0]} rows on this host, not divisible "
                       f"by its {local_devices} local devices; pick a global batch size that "
                       "divides by the number of devices.")
    out[name] = jax.make_array_from_process_local_data(sharding, value)
  return out


def prefetch_to_mesh(batches: Iterable[Mapping[str, Any]], mesh: Mesh, *,
                     size: int = 2) -> Iterator[dict]:
  """`shard_batch` of each of `batches`, issued `size` batches ahead.

  A host-to-device copy is dispatched without waiting for it, so while the
  devices run one step the next batches already travel to them (as
  `flax.jax_utils.prefetch_to_device` does for pmap). Reads at most `size`
  batches ahead of what it has yielded.
  """
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"size must be an int >= 1, got {size!r}.")
  batches = iter(batches)
  queue = collections.deque(
      shard_batch(batch, mesh) for batch in itertools.islice(batches, size))
  while queue:
    yield queue.popleft()
    queue.extend(shard_batch(batch, mesh) for batch in itertools.islice(batches, 1))


def _check_bn_axis(model: nn.Module, expected, where: str) -> None:
  actual = getattr(model, "bn_axis_name", None)
  if actual != expected:
    raise ValueError(f"{where} needs a model built with bn_axis_name={expected!r}, got "
                     f"bn_axis_name={actual!r}.")


def compile_train_step(model: nn.Module,
                       tx: optax.GradientTransformation,
                       method: methods_lib.Method,
                       mesh: Mesh,
                       *,
                       learning_rate_fn: Optional[optax.Schedule] = None,
                       steps_per_epoch: Optional[int] = None,
                       batch_norm: str = "sync") -> Callable:
  """The jitted, state-donating train step over `mesh`.

  Args:
    model: built with `bn_axis_name=None` (the mesh program decides how
      statistics are shared).
    tx, method, learning_rate_fn, steps_per_epoch: as in `step.make_train_step`.
    mesh: from `make_data_mesh`.
    batch_norm: 'sync' (global-batch statistics, jit) or 'per_device'
      (each device's own shard, shard_map).

  Returns:
    `step(state, batch) -> (state, metrics)`; `state` replicated on the mesh
    and `batch` from `shard_batch`.
  """
  if batch_norm not in BATCH_NORM_MODES:
    raise ValueError(f"batch_norm must be one of {BATCH_NORM_MODES}, got {batch_norm!r}.")
  _check_bn_axis(model, None, "compile_train_step")
  repl, data = replicated(mesh), batch_sharded(mesh)
  if batch_norm == "sync":
    fn = step_lib.make_train_step(model, tx, method, learning_rate_fn=learning_rate_fn,
                                  steps_per_epoch=steps_per_epoch)
    return jax.jit(fn, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)
  fn = step_lib.make_train_step(model, tx, method, learning_rate_fn=learning_rate_fn,
                                steps_per_epoch=steps_per_epoch, axis_name=DATA_AXIS)
  fn = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=(P(), P()))
  return jax.jit(fn, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)


def compile_eval_step(model: nn.Module, mesh: Mesh) -> Callable:
  """The jitted eval step over `mesh`: global sums of top-1/top-5/count."""
  repl, data = replicated(mesh), batch_sharded(mesh)
  return jax.jit(step_lib.make_eval_step(model), in_shardings=(repl, data),
                 out_shardings=repl)


def pmap_train_step(model: nn.Module,
                    tx: optax.GradientTransformation,
                    method: methods_lib.Method,
                    *,
                    learning_rate_fn: Optional[optax.Schedule] = None,
                    steps_per_epoch: Optional[int] = None,
                    axis_name: str = "batch") -> Callable:
  """The same train step under `jax.pmap`, for code built around pmap.

  The model's `bn_axis_name` should be `axis_name` for synchronised
  statistics, or None for per-device ones. The state is replicated along a
  leading device axis (`flax.jax_utils.replicate`) and the batch reshaped to
  (devices, per-device batch, ...). The state is donated.
  """
  fn = step_lib.make_train_step(model, tx, method, learning_rate_fn=learning_rate_fn,
                                steps_per_epoch=steps_per_epoch, axis_name=axis_name)
  return jax.pmap(fn, axis_name=axis_name, donate_argnums=0)
