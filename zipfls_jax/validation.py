"""Trace-time argument checks shared by the loss modules.

Everything here looks only at static shapes, dtypes and Python scalars, so
it runs once per trace and costs nothing per step. Value checks (labels and
vote ids in range) cannot raise inside `jax.jit`; `check_labels` and
`check_votes` offer them through `jax.experimental.checkify`.
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
  """Checks `logits` (..., C) float (or int if `allow_int`) and `labels` (...) int; returns C.

  The two mistakes users make most get a message that says the fix: one-hot
  labels (the losses take class ids) and logits with an extra axis of size 1.
  """
  if not (allow_int and jnp.issubdtype(jnp.result_type(logits), jnp.integer)):
    check_float(logits_name, logits)
  logits_shape, labels_shape = tuple(jnp.shape(logits)), tuple(jnp.shape(labels))
  if labels_shape == logits_shape and len(logits_shape) >= 1:
    raise ValueError(
        f"`labels` must be integer class ids of shape {logits_shape[:-1]}, got an array of "
        f"the shape of `{logits_name}` {logits_shape}: one-hot (or soft) labels are not "
        "accepted. Convert one-hot labels with `jnp.argmax(onehot, axis=-1)`.")
  check_int("labels", labels)
  num_classes = check_num_classes(logits_name, logits_shape)
  if labels_shape != logits_shape[:-1]:
    hint = ""
    leading = logits_shape[:-1]
    if 1 in leading and tuple(d for d in leading if d != 1) == tuple(
        d for d in labels_shape if d != 1):
      hint = (f" `{logits_name}` has an extra axis of size 1: pass logits of shape "
              f"{labels_shape + (num_classes,)}, e.g. "
              f"`{logits_name}.reshape(*labels.shape, {num_classes})`, and leave `labels` "
              "as they are.")
    raise ValueError(
        f"`labels` must have shape {leading} (the leading axes of `{logits_name}` "
        f"{logits_shape}, which are (..., C) with one leading axis per label axis), got "
        f"{labels_shape}.{hint}")
  return num_classes


def check_votes_shape(votes, labels, logits) -> None:
  """`votes` (..., K) int class ids, with the leading shape of `labels`."""
  check_int("votes", votes)
  if jnp.ndim(votes) != jnp.ndim(logits) or jnp.shape(votes)[:-1] != jnp.shape(labels):
    raise ValueError(
        f"`votes` must be (..., K) class ids with leading shape {tuple(jnp.shape(labels))} "
        f"(that of `labels`; K votes per example), got {tuple(jnp.shape(votes))}.")


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


def check_scalar(name: str, value) -> None:
  """A static hyperparameter: a Python or NumPy number, not an array or tracer."""
  if isinstance(value, (bool, np.bool_)) or not (
      isinstance(value, (int, float)) or (np.isscalar(value) and np.ndim(value) == 0
                                          and not isinstance(value, (str, bytes)))):
    raise TypeError(f"`{name}` must be a Python number (a static hyperparameter), got "
                    f"{type(value).__name__}.")


def check_positive(name: str, value) -> None:
  check_scalar(name, value)
  if not value > 0:   # NaN fails too
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


def check_votes(votes, num_classes: int) -> None:
  """Value check for use under `checkify.checkify`: vote ids in [0, num_classes).

  The losses and `vote_counts` ignore vote ids outside [0, C) (so -1 can pad
  a vote list). Ids from `dense_votes` always lie inside; use this check
  when votes come from elsewhere and an id >= C would be a bug:

    >>> import jax, jax.numpy as jnp
    >>> from jax.experimental import checkify
    >>> from zipfls_jax import check_votes
    >>> def f(votes):
    ...   check_votes(votes, 10)
    ...   return votes
    >>> err, _ = jax.jit(checkify.checkify(f))(jnp.array([[3, 10]]))
    >>> err.get()
    'vote ids must lie in [0, 10): got an id outside that range, which the loss would ignore (`check` failed)'
  """
  votes = jnp.asarray(votes)
  check_int("votes", votes)
  checkify.check(
      jnp.all((votes >= 0) & (votes < num_classes)),
      f"vote ids must lie in [0, {num_classes}): got an id outside that range, which the "
      "loss would ignore")
