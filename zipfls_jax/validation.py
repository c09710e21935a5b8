"""Trace-time argument checks shared by the loss modules.

Everything here looks only at static shapes and dtypes, so it runs once per
trace and costs nothing per step. Value checks (labels in range) cannot raise
inside `jax.jit`; `check_labels` offers them through `jax.experimental.checkify`.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify


def check_float(name: str, x) -> None:
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating-point array, got dtype {dtype}.")


def check_int(name: str, x) -> None:
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"`{name}` must be an integer array of class ids, got dtype {dtype}.")


def check_num_classes(name: str, shape) -> int:
  if len(shape) < 1:
    raise ValueError(f"`{name}` must have a trailing class axis of size C >= 2, got a scalar.")
  num_classes = shape[-1]
  if num_classes < 2:
    raise ValueError(
        f"`{name}` must have C >= 2 classes on its last axis, got shape {tuple(shape)}.")
  return num_classes


def check_logits_labels(logits, labels, logits_name: str = "logits",
                        allow_int: bool = False) -> int:
  """Checks `logits` (..., C) float (or int if `allow_int`) and `labels` (...) int; returns C."""
  if not (allow_int and jnp.issubdtype(jnp.result_type(logits), jnp.integer)):
    check_float(logits_name, logits)
  check_int("labels", labels)
  num_classes = check_num_classes(logits_name, jnp.shape(logits))
  if jnp.shape(labels) != jnp.shape(logits)[:-1]:
    raise ValueError(
        f"`labels` must have shape {tuple(jnp.shape(logits)[:-1])} (the leading axes of "
        f"`{logits_name}` {tuple(jnp.shape(logits))}), got {tuple(jnp.shape(labels))}.")
  return num_classes


def check_same_shape(name: str, x, other_name: str, other) -> None:
  if jnp.shape(x) != jnp.shape(other):
    raise ValueError(
        f"`{name}` must have the shape of `{other_name}` {tuple(jnp.shape(other))}, "
        f"got {tuple(jnp.shape(x))}.")


def check_where(where, batch_shape) -> None:
  if where is None:
    return
  if jnp.shape(where) != tuple(batch_shape):
    raise ValueError(
        f"`where` must be a boolean mask of shape {tuple(batch_shape)} (one flag per "
        f"example), got {tuple(jnp.shape(where))}.")
  if jnp.result_type(where) != jnp.bool_:
    raise TypeError(f"`where` must be boolean, got dtype {jnp.result_type(where)}.")


def check_positive(name: str, value) -> None:
  if not np.isscalar(value) and np.ndim(value) != 0:
    raise TypeError(f"`{name}` must be a Python scalar, got {type(value).__name__}.")
  if not value > 0:
    raise ValueError(f"`{name}` must be > 0, got {value}.")


def check_labels(labels, num_classes: int) -> None:
  """Value check for use under `checkify.checkify`: labels in [0, num_classes).

  Inside `jax.jit` an out-of-range label cannot raise; the losses of this
  package then return NaN for that example. Wrap a step to catch it:

    >>> import jax, jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> from zipfls_jax import check_labels
    >>> def f(labels):
    ...   check_labels(labels, 10)
    ...   return labels
    >>> err, _ = jax.jit(checkify.checkify(f))(jnp.array([3, 12]))
    >>> err.get()
    'labels must lie in [0, 10): got a label outside that range (`check` failed)'
  """
  labels = jnp.asarray(labels)
  check_int("labels", labels)
  checkify.check(
      jnp.all((labels >= 0) & (labels < num_classes)),
      f"labels must lie in [0, {num_classes}): got a label outside that range")
