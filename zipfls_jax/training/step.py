"""Pure train and eval steps, written once for every way of running them.

`make_train_step` and `make_eval_step` return plain functions of
(state, batch). With `axis_name=None` they are global programs for
`jax.jit` over a device mesh (XLA partitions the batch; BatchNorm statistics
are then global, i.e. synchronised). With an `axis_name` they are
per-device programs for `jax.shard_map` or `jax.pmap`: every mean is taken
over the global batch and the gradients are averaged across devices.
Placement and compilation live in `parallel.py`; this module must not
touch devices, the host or TensorFlow.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zipfls_jax import topk_correct  # the package's one rule for "correct"; re-exported
from zipfls_jax import zipf_law
from zipfls_jax.training import methods as methods_lib
from zipfls_jax.training.state import TrainState

Batch = Dict[str, jax.Array]
Metrics = Dict[str, jax.Array]


def make_train_step(model: nn.Module,
                    tx: optax.GradientTransformation,
                    method: methods_lib.Method,
                    *,
                    learning_rate_fn: Optional[optax.Schedule] = None,
                    steps_per_epoch: Optional[int] = None,
                    axis_name=None) -> Callable[[TrainState, Batch], Tuple[TrainState, Metrics]]:
  """Builds `train_step(state, batch) -> (state, metrics)`.

  Args:
    model: linen module applied as `model.apply(variables, images,
      train=True, votes=..., mutable=['batch_stats'])`, returning a
      `ModelOutput`. Its `bn_axis_name` decides BatchNorm synchronisation
      inside shard_map / pmap.
    tx: optimizer.
    method: the training method (`zipfls_jax.training.methods`), e.g. an
      `Objective` for CE / LS / Zipf's LS. Its `loss` runs the forward
      passes; each updates the BatchNorm statistics in turn.
    learning_rate_fn: schedule, only to log the rate of this step.
    steps_per_epoch: needed by methods with an epoch-boundary update
      (`method.has_epoch_update`): it runs after every step that ends an
      epoch, inside the compiled step.
    axis_name: None for a global (jit) program; the device axis name for a
      per-device (shard_map / pmap) program.

  Returns:
    The pure step. `batch` holds 'image' (N, H, W, C) float and 'label' (N,)
    int, and what the method's `data_needs` add ('image2', 'index');
    metrics are global scalars: the method's parts (loss, ce, ...), top1,
    top5 (training batch, in %) and learning_rate.
  """
  if method.has_epoch_update and not steps_per_epoch:
    raise ValueError(f"Method {method.name!r} updates its state at epoch boundaries: pass "
                     f"steps_per_epoch (got {steps_per_epoch!r}).")

  def train_step(state: TrainState, batch: Batch) -> Tuple[TrainState, Metrics]:
    # A fresh key per step, reproducible on resume; per device, distinct.
    key = jax.random.fold_in(state.rng, state.step)
    if axis_name is not None:
      key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    loss_key, dropout_key = jax.random.split(key)

    def loss_fn(params):
      forward = methods_lib.Forward(model, params, state.batch_stats, dropout_key)
      result = method.loss(forward, batch, state.method_state,
                           key=loss_key if method.needs_key else None, axis_name=axis_name)
      return result.loss, (result, forward.batch_stats)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (_, (result, batch_stats)), grads = grad_fn(state.params)
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      # Per-device statistics are averaged after the step so the state stays
      # replicated (as flax's examples do); with synchronised BN this is a no-op.
      batch_stats = jax.lax.pmean(batch_stats, axis_name)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    method_state = jax.lax.stop_gradient(result.state)
    if method.has_epoch_update:
      ends_epoch = (state.step + 1) % steps_per_epoch == 0
      method_state = jax.lax.cond(ends_epoch, method.end_epoch, lambda s: s, method_state)

    metrics = dict(result.parts)
    logits, labels = jax.lax.stop_gradient(result.logits), result.labels
    # Percentages, like the evaluation's, so train and eval lines compare.
    metrics["top1"] = 100.0 * methods_lib.global_mean(topk_correct(logits, labels, 1),
                                                      axis_name)
    metrics["top5"] = 100.0 * methods_lib.global_mean(topk_correct(logits, labels, 5),
                                                      axis_name)
    if learning_rate_fn is not None:
      metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, method_state=method_state)
    return new_state, metrics

  return train_step


def make_eval_step(model: nn.Module, *, axis_name=None) -> Callable[[TrainState, Batch], Metrics]:
  """Builds `eval_step(state, batch) -> sums` for exact evaluation.

  `batch` holds 'image', 'label' and 'mask' (False on padding rows). Returns
  global sums: 'top1' and 'top5' (correct counts) and 'count' (real
  examples), all float32, and 'ranked', the `zipf_law.RankedProbabilitySums`
  of the batch (the ranked-prediction curve of Zipf's law), all to be added
  over batches and divided at the end.
  """
  def eval_step(state: TrainState, batch: Batch) -> Metrics:
    output = model.apply({"params": state.params, "batch_stats": state.batch_stats},
                         batch["image"], train=False)
    logits, labels = output.logits, batch["label"]
    mask = batch["mask"].astype(jnp.float32)
    sums = {
        "top1": jnp.sum(topk_correct(logits, labels, 1) * mask),
        "top5": jnp.sum(topk_correct(logits, labels, 5) * mask),
        "count": jnp.sum(mask),
        "ranked": zipf_law.ranked_probability_sums(logits, labels,
                                                   where=batch["mask"].astype(jnp.bool_)),
    }
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return sums

  return eval_step
