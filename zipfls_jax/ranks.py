"""Ranks of class scores with the method's tie rule, vote statistics, correctness.

SPEC section 1.2: classes are ranked over all C classes, target included,
descending, ties taking the minimum rank (scipy `rankdata(-s, method='min')`).
Two paths:

* `rank_min` / `rank_max` on dense (..., C) scores: one sort, then a search
  (logit ranking needs it).
* `vote_statistics` on (..., K) vote class ids: only the K voted classes can
  differ from the rank shared by every unvoted class, so their ranks come
  from a histogram of the votes: the one pass over C is zeroing and filling
  the (..., C) vote counts, no sort over C (the fast path of the loss).

`topk_correct` applies the same rule to the label: the package's one
definition of a correct prediction.

Nothing here takes gradients: ranks are integers.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zipfls_jax import validation
from zipfls_jax.indexing import in_range_ids, scatter_add_rows


def _count_greater_equal(scores: jax.Array):
  """#{j: s_j > s_k} and #{j: s_j >= s_k} along the last axis."""
  num_classes = scores.shape[-1]
  flat = scores.reshape(-1, num_classes)
  ascending = jnp.sort(flat, axis=-1)
  search = jax.vmap(jnp.searchsorted, in_axes=(0, 0, None))
  not_greater = search(ascending, flat, "right")
  less = search(ascending, flat, "left")
  greater = (num_classes - not_greater).reshape(scores.shape)
  greater_equal = (num_classes - less).reshape(scores.shape)
  return greater.astype(jnp.int32), greater_equal.astype(jnp.int32)


def rank_min(scores: jax.Array) -> jax.Array:
  """Descending ranks along the last axis, ties taking the minimum rank.

  rank[k] = 1 + #{j : scores[j] > scores[k]}, exactly
  `scipy.stats.rankdata(-scores, method='min', axis=-1)`.

  Args:
    scores: (..., C) real scores (logits or vote counts).

  Returns:
    (..., C) int32 ranks in [1, C]; 1 is the largest score.

  Example:
    >>> rank_min(jnp.array([3, 0, 3, 1]))
    Array([1, 4, 1, 3], dtype=int32)
  """
  validation.check_num_classes("scores", jnp.shape(scores))
  return 1 + _count_greater_equal(jax.lax.stop_gradient(jnp.asarray(scores)))[0]


def rank_max(scores: jax.Array) -> jax.Array:
  """Descending ranks, ties taking the maximum rank (`rankdata(..., 'max')`).

  rank_max - rank_min + 1 is the size of each class's tie group.
  """
  validation.check_num_classes("scores", jnp.shape(scores))
  return _count_greater_equal(jax.lax.stop_gradient(jnp.asarray(scores)))[1]


def topk_correct(logits: jax.Array, labels: jax.Array, k: int = 1) -> jax.Array:
  """Whether the label is among the top k: fewer than k classes score higher.

  The package's one definition of "correct", used by the correct-only mask
  (`ZipfTerms.correct`, k = 1) and the logged top-1 / top-5 accuracies. It
  is the rank rule of the targets: the label's min rank (1 + the number of
  classes scoring strictly higher, ties sharing the best rank) is <= k. So
  a label tied with the highest logit counts as correct, whatever its index.
  An out-of-range label, or a NaN logit at the label, is never correct.

  Args:
    logits: (..., C) scores.
    labels: (...) int labels.
    k: how many of the best ranks count.

  Returns:
    (...) bool.

  Example:
    >>> topk_correct(jnp.array([[1., 3., 3.], [1., 3., 3.]]), jnp.array([2, 0]))
    Array([ True, False], dtype=bool)
  """
  validation.check_logits_labels(logits, labels)
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"`k` must be an int >= 1, got {k!r}.")
  logits = jax.lax.stop_gradient(jnp.asarray(logits))
  labels = jnp.asarray(labels)
  # mode="fill" makes an out-of-range label's logit NaN, which nothing beats.
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1, mode="fill",
                                    fill_value=jnp.nan)
  higher = jnp.sum(logits > label_logit, axis=-1)
  return (higher < k) & ~jnp.isnan(label_logit[..., 0])


def vote_counts(class_ids: jax.Array, num_classes: int, dtype=jnp.int32) -> jax.Array:
  """Histogram of votes: (..., K) class ids -> (..., C) counts.

  A scatter-add, so nothing of size K x C is built. Ids outside
  [0, num_classes) are dropped. `dtype` must hold K (the loss uses the
  narrowest one, since zeroing the (..., C) histogram is most of its cost).

  Example:
    >>> vote_counts(jnp.array([[2, 2, 0]]), 4)
    Array([[1, 0, 2, 0]], dtype=int32)
  """
  validation.check_int("class_ids", class_ids)
  if not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
  class_ids = jnp.asarray(class_ids)
  if class_ids.ndim < 1:
    raise ValueError("`class_ids` must be (..., K) vote class ids, got a scalar.")
  batch_shape, k = class_ids.shape[:-1], class_ids.shape[-1]
  safe_ids, in_range = in_range_ids(class_ids.reshape(-1, k), num_classes)
  counts = scatter_add_rows(jnp.zeros((safe_ids.shape[0], num_classes), dtype), safe_ids,
                            in_range.astype(dtype))
  return counts.reshape(*batch_shape, num_classes)


class VoteStatistics(NamedTuple):
  """Per-vote view of the ranks that K votes induce over C classes.

  Attributes (all (..., K) unless noted), for vote i with class ids[i]:
    count: votes for ids[i] among the K (0 for an out-of-range id).
    share: 1 / count, so that summing a per-class quantity times `share`
      over the K votes counts each voted class exactly once (0 for an
      out-of-range id, which is ignored).
    rank: min rank of class ids[i] over all C classes.
    group_size: number of classes tied with ids[i] (same vote count).
    num_voted: (...,) number of distinct voted classes.
    unvoted_rank: (...,) the rank shared by every unvoted class,
      num_voted + 1; their tie group has C - num_voted classes.
    counts: (..., C) the vote histogram (`vote_counts`), in the narrowest
      unsigned dtype that holds K.
  """
  count: jax.Array
  share: jax.Array
  rank: jax.Array
  group_size: jax.Array
  num_voted: jax.Array
  unvoted_rank: jax.Array
  counts: jax.Array


def vote_statistics(class_ids: jax.Array, num_classes: int) -> VoteStatistics:
  """Ranks of the voted classes from (..., K) vote ids, without a sort over C.

  SPEC 1's linear-time ranking: with h[v] the number of classes that got v
  votes, rank_min(k) = 1 + sum_{u > s_k} h[u]. h needs only the K voted
  classes (each vote adds 1 / its class's count to h[count], so a class
  adds 1 in total); every unvoted class shares rank num_voted + 1 (SPEC
  1.2). The only pass over C is the histogram scatter of `vote_counts`;
  the suffix sums are one small (K+1) x (K+1) matmul, which XLA runs as a
  single op where a cumsum takes several.
  """
  ids = jnp.asarray(class_ids)
  batch_shape, k = ids.shape[:-1], ids.shape[-1]
  narrow = jnp.uint8 if k < 2 ** 8 else jnp.uint16 if k < 2 ** 16 else jnp.int32
  counts = vote_counts(class_ids, num_classes, dtype=narrow)
  safe_ids, in_range = in_range_ids(ids.reshape(-1, k), num_classes)
  count = jnp.take_along_axis(counts.reshape(-1, num_classes), safe_ids, axis=-1,
                              mode="promise_in_bounds")
  count = jnp.where(in_range, count.astype(jnp.int32), 0)
  share = jnp.where(count > 0, 1.0 / jnp.maximum(count, 1), 0.0)
  # classes_with_count[v] = number of classes with exactly v votes (v >= 1).
  classes_with_count = jnp.round(
      scatter_add_rows(jnp.zeros((safe_ids.shape[0], k + 1), jnp.float32), count, share))
  # A literal, not iota arithmetic that would rerun on every call.
  more = np.tril(np.ones((k + 1, k + 1), np.float32), -1)   # more[u, v] = u > v
  # classes_beating[v] = number of classes with more than v votes; integers in
  # f32, exact at full precision (TPUs would otherwise multiply in bf16).
  classes_beating = jnp.dot(classes_with_count, more, precision=jax.lax.Precision.HIGHEST)
  # Both lookups in one gather (each gather's index bookkeeping is the cost).
  looked_up = jnp.take_along_axis(jnp.stack([classes_beating, classes_with_count], axis=-1),
                                  count.astype(jnp.uint32)[..., None], axis=1,
                                  mode="promise_in_bounds").astype(jnp.int32)
  rank, group_size = 1 + looked_up[..., 0], looked_up[..., 1]
  num_voted = classes_with_count.sum(-1).astype(jnp.int32)
  shaped = lambda x: x.reshape(*batch_shape, *x.shape[1:])
  return VoteStatistics(shaped(count), shaped(share), shaped(rank), shaped(group_size),
                        shaped(num_voted), shaped(num_voted + 1), counts)
