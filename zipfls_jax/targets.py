"""Zipf soft targets over the non-target classes (SPEC sections 1.3-1.4 and 3).

A distribution maps each class's rank to an unnormalised weight d; the
target's weight is masked *after* ranking and the rest normalised:
q_j = d_j / sum_{i != y} d_i, q_y = 0. Targets carry no gradient.

This module holds the one declaration of the distributions' options
(`TargetDistribution`, which validates them) and the one definition of every
distribution (`rank_weights` for the rank-driven ones, `_random_weights` for
the random ablations); the fused loss in `losses.py` evaluates the same
`rank_weights` on vote ranks. It must not import flax, optax or TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Union

import jax
import jax.numpy as jnp

from zipfls_jax import ranks, validation

RANK_DISTRIBUTIONS = ("zipf", "constant", "linear_decay", "exponential_decay", "unbiased_zipf")
RANDOM_DISTRIBUTIONS = ("random_uniform", "random_gaussian", "random_pareto", "sorted_pareto")
DISTRIBUTIONS = RANK_DISTRIBUTIONS + RANDOM_DISTRIBUTIONS


@dataclasses.dataclass(frozen=True)
class TargetDistribution:
  """The target distribution over ranks and its parameters, validated once.

  The single declaration of these options: the losses, `zipf_targets`, the
  training `Objective` and the config's `loss` block all use this object.
  Every value is checked here, when it is built; only `smallest_prob`'s
  upper limit 1/C waits for C (`check_num_classes`, at trace time).

  Attributes:
    name: one of `DISTRIBUTIONS` (docs/method.md section 3); the losses'
      `distribution=` keyword and the config key `loss.distribution`.
    power: exponent of 'zipf' and 'unbiased_zipf' (d = rank ** -power), > 0.
    smallest_prob: 'linear_decay' weight of the last rank, in [0, 1/C].
    decay: 'exponential_decay' rate (d = exp(-decay * (rank - 1))), > 0.
    lower_bound, upper_bound: 'unbiased_zipf' integration range [lb, ub],
      split into C equal cells; lb > 0; ub None means lb + C (unit cells).

  Example:
    >>> TargetDistribution("linear_decay", smallest_prob=0.001).name
    'linear_decay'
  """
  name: str = "zipf"
  power: float = 1.0
  smallest_prob: float = 0.0
  decay: float = 1.0
  lower_bound: float = 1.0
  upper_bound: Optional[float] = None

  def __post_init__(self):
    # Every comparison is written so that NaN fails it.
    if self.name not in DISTRIBUTIONS:
      raise ValueError(
          f"`distribution` must be one of {', '.join(DISTRIBUTIONS)}; got {self.name!r}.")
    validation.check_positive("power", self.power)
    validation.check_scalar("smallest_prob", self.smallest_prob)
    if not self.smallest_prob >= 0.0:
      raise ValueError(f"`smallest_prob` must lie in [0, 1/C], got {self.smallest_prob}.")
    validation.check_positive("decay", self.decay)
    validation.check_positive("lower_bound", self.lower_bound)
    if self.upper_bound is not None:
      validation.check_scalar("upper_bound", self.upper_bound)
      if not self.upper_bound > self.lower_bound:
        raise ValueError(
            f"`upper_bound` must be None or exceed `lower_bound` = {self.lower_bound}; "
            f"got {self.upper_bound}.")

  @classmethod
  def of(cls, distribution) -> "TargetDistribution":
    """`distribution` itself, or a name as `TargetDistribution(name)`."""
    if isinstance(distribution, cls):
      return distribution
    if isinstance(distribution, str):
      return cls(distribution)
    raise TypeError("`distribution` must be a name (one of "
                    f"{', '.join(DISTRIBUTIONS)}) or a zipfls_jax.TargetDistribution; got "
                    f"{type(distribution).__name__}.")

  @property
  def is_random(self) -> bool:
    """Whether fresh weights are drawn every step (the call then needs `key`)."""
    return self.name in RANDOM_DISTRIBUTIONS

  def check_call(self, num_classes: int, key) -> None:
    """The checks that need the call: 1/C for `smallest_prob`, `key` if random."""
    if self.is_random and key is None:
      raise ValueError(
          f"distribution {self.name!r} draws fresh weights every step: pass `key` "
          "(a jax.random key, e.g. folded with the step number); got key=None.")
    if self.name == "linear_decay" and not self.smallest_prob <= 1.0 / num_classes:
      raise ValueError(
          f"`smallest_prob` must lie in [0, 1/C] = [0, {1.0 / num_classes:.6g}] for C = "
          f"{num_classes} classes; got {self.smallest_prob}.")


def rank_weights(rank: jax.Array,
                 *,
                 num_classes: int,
                 distribution: TargetDistribution = TargetDistribution(),
                 group_size: Optional[jax.Array] = None) -> jax.Array:
  """Unnormalised weight d of each class from its min rank (SPEC section 3).

  Args:
    rank: int min ranks in [1, C], any shape.
    num_classes: C.
    distribution: a rank-driven `TargetDistribution` (not a random one).
    group_size: tie-group size of each rank (same shape as `rank`); only
      'unbiased_zipf' reads it, which spreads the integral over a tie
      group's whole span equally among its members.

  Returns:
    float32 weights, the shape of `rank`.
  """
  name = distribution.name
  if name not in RANK_DISTRIBUTIONS:
    raise ValueError(
        f"rank_weights takes a rank-driven distribution ({', '.join(RANK_DISTRIBUTIONS)}); "
        f"got {name!r}.")
  r = jnp.asarray(rank).astype(jnp.float32)
  c = float(num_classes)
  if name == "zipf":
    return r ** (-distribution.power)
  if name == "constant":
    return jnp.ones_like(r)
  if name == "linear_decay":
    s = distribution.smallest_prob
    gap = 2.0 * (1.0 - c * s) / ((c - 1.0) * c)
    return (c - r) * gap + s
  if name == "exponential_decay":
    return jnp.exp(-distribution.decay * (r - 1.0))
  # unbiased_zipf
  if group_size is None:
    raise ValueError("'unbiased_zipf' needs `group_size` (the size of each rank's tie group).")
  m = jnp.asarray(group_size).astype(jnp.float32)
  lb = distribution.lower_bound
  ub = lb + c if distribution.upper_bound is None else distribution.upper_bound
  width = (ub - lb) / c
  a = lb + (r - 1.0) * width
  b = lb + (r - 1.0 + m) * width
  p = distribution.power
  if p == 1.0:
    integral = jnp.log(b / a)
  else:
    integral = (b ** (1.0 - p) - a ** (1.0 - p)) / (1.0 - p)
  return integral / m


def _random_weights(key, scores: jax.Array, distribution: TargetDistribution) -> jax.Array:
  """Fresh random weights of the shape of `scores` (the random ablations)."""
  shape = scores.shape
  name = distribution.name
  if name == "random_uniform":
    return jax.random.uniform(key, shape)
  if name == "random_gaussian":
    return jnp.abs(jax.random.normal(key, shape))
  # Lomax(a=1), numpy's `pareto(1)`: a Pareto(x_m=1) sample minus one.
  samples = jax.random.pareto(key, 1.0, shape) - 1.0
  if name == "random_pareto":
    return samples
  # sorted_pareto, the authors' intent: the largest sample to the best rank,
  # a tie group sharing the value at its min rank.
  descending = -jnp.sort(-samples, axis=-1)
  return jnp.take_along_axis(descending, ranks.rank_min(scores) - 1, axis=-1)


def normalise_excluding_label(weights: jax.Array, labels: jax.Array) -> jax.Array:
  """q_j = d_j / sum_{i != y} d_i, q_y = 0; uniform if all non-target d are 0."""
  num_classes = weights.shape[-1]
  is_label = jnp.arange(num_classes) == labels[..., None]
  weights = jnp.where(is_label, 0.0, weights)
  total = weights.sum(-1, keepdims=True)
  uniform = jnp.where(is_label, 0.0, 1.0 / (num_classes - 1))
  return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), uniform)


def zipf_targets(scores: jax.Array,
                 labels: jax.Array,
                 *,
                 distribution: Union[str, TargetDistribution] = "zipf",
                 key: Optional[jax.Array] = None) -> jax.Array:
  """Soft targets over the non-target classes from ranked scores.

  With r_k = rank_min(scores)_k (1 = best, ties share the minimum rank) and
  d_k = r_k ** -power for the default 'zipf',
  q_j = d_j / sum_{i != y} d_i for j != y and q_y = 0.

  Args:
    scores: (..., C) logits or vote counts (e.g. `vote_counts(votes, C)`).
    labels: (...) int class ids.
    distribution: a `TargetDistribution`, or the name of one with its
      default parameters (one of `DISTRIBUTIONS`, docs/method.md section 3).
    key: jax.random key, required by the random distributions.

  Returns:
    (..., C) float32 targets, rows summing to 1, zero at the label, no
    gradient. An out-of-range label leaves every class in the row.

  Example:
    >>> q = zipf_targets(jnp.array([[3., 0., 2., 1.]]), jnp.array([0]))
    >>> (13 * q).round()   # ranks 1, 4, 2, 3; label 0 masked: (1/4, 1/2, 1/3) / (13/12)
    Array([[0., 3., 6., 4.]], dtype=float32)
    >>> zipf_targets(jnp.array([[3., 0., 2., 1.]]), jnp.array([0]),
    ...              distribution=TargetDistribution("zipf", power=2.0)).shape
    (1, 4)

  Reference: Liang et al., "Efficient One Pass Self-distillation with Zipf's
  Label Smoothing", ECCV 2022.
  """
  num_classes = validation.check_logits_labels(scores, labels, "scores", allow_int=True)
  dist = TargetDistribution.of(distribution)
  dist.check_call(num_classes, key)
  return dense_targets(scores, labels, dist, key)


def dense_targets(scores: jax.Array, labels: jax.Array, dist: TargetDistribution,
                  key: Optional[jax.Array] = None) -> jax.Array:
  """`zipf_targets` for an already checked `TargetDistribution` (no argument checks)."""
  num_classes = scores.shape[-1]
  scores = jax.lax.stop_gradient(jnp.asarray(scores))
  if dist.name in RANDOM_DISTRIBUTIONS:
    weights = _random_weights(key, scores, dist)
  else:
    rank = ranks.rank_min(scores)
    group_size = ranks.rank_max(scores) - rank + 1 if dist.name == "unbiased_zipf" else None
    weights = rank_weights(rank, num_classes=num_classes, distribution=dist, group_size=group_size)
  return jax.lax.stop_gradient(normalise_excluding_label(weights, labels))

