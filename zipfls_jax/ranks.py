"""Ranks of class scores, with SPEC's tie rule, and vote statistics.

SPEC section 1.2: classes are ranked over all C classes, target included,
descending, ties taking the minimum rank (scipy `rankdata(-s, method='min')`).
Two paths:

* `rank_min` / `rank_max` on dense (..., C) scores: one sort, then a search
  (logit ranking needs it).
* `vote_statistics` on (..., K) vote class ids: only the K voted classes can
  differ from the rank shared by every unvoted class, so ranks come from
  K x K comparisons with no pass over C at all (the fast path of the loss).

Nothing here takes gradients: ranks are integers.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from zipfls_jax import validation


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


def vote_counts(class_ids: jax.Array, num_classes: int) -> jax.Array:
  """Histogram of votes: (..., K) class ids -> (..., C) int32 counts.

  A scatter-add, so nothing of size K x C is built. Ids outside
  [0, num_classes) are dropped.

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
  flat = class_ids.reshape(-1, k)
  # Negative ids would wrap around NumPy-style; send them out of range too.
  flat = jnp.where(flat < 0, num_classes, flat)
  rows = jnp.arange(flat.shape[0])[:, None]
  counts = jnp.zeros((flat.shape[0], num_classes), jnp.int32)
  counts = counts.at[rows, flat].add(1, mode="drop")
  return counts.reshape(*batch_shape, num_classes)


class VoteStatistics(NamedTuple):
  """Per-vote view of the ranks that a set of K votes induces over C classes.

  Attributes (all (..., K) unless noted): for vote i with class ids[i]:
    count: votes for ids[i] among the K.
    first: True at the first vote for each distinct class (so summing a
      per-class quantity over `first` counts each voted class once).
    rank: min rank of class ids[i] over all C classes.
    group_size: number of classes tied with ids[i] (same vote count).
    num_voted: (...,) number of distinct voted classes.
    unvoted_rank: (...,) the rank shared by every unvoted class,
      num_voted + 1; their tie group has C - num_voted classes.
  """
  count: jax.Array
  first: jax.Array
  rank: jax.Array
  group_size: jax.Array
  num_voted: jax.Array
  unvoted_rank: jax.Array


def vote_statistics(class_ids: jax.Array) -> VoteStatistics:
  """Ranks of the voted classes from (..., K) vote ids, in O(K^2), no pass over C.

  Vote i's class has count c_i = #{j : id_j = id_i}. A class outranks it iff
  its count is larger, so rank_i = 1 + #{distinct voted classes with count >
  c_i}; unvoted classes (count 0) share rank num_voted + 1 (SPEC 1.2).
  """
  validation.check_int("votes", class_ids)
  ids = jnp.asarray(class_ids)
  same = ids[..., :, None] == ids[..., None, :]
  count = same.sum(-1, dtype=jnp.int32)
  k = ids.shape[-1]
  earlier = jnp.tril(jnp.ones((k, k), jnp.bool_), -1)
  first = ~jnp.any(same & earlier, axis=-1)
  num_voted = first.sum(-1, dtype=jnp.int32)
  # For vote i, compare against each distinct voted class j (first_j).
  beats = (count[..., None, :] > count[..., :, None]) & first[..., None, :]
  ties = (count[..., None, :] == count[..., :, None]) & first[..., None, :]
  rank = 1 + beats.sum(-1, dtype=jnp.int32)
  group_size = ties.sum(-1, dtype=jnp.int32)
  return VoteStatistics(count, first, rank, group_size, num_voted, num_voted + 1)
