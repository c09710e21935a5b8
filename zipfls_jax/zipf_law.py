r"""Zipf's law of ranked predictions: measure it, fit it, follow it in training.

**The observation.** Take a trained classifier, sort each example's softmax
output from the largest probability to the smallest, and average these
sorted vectors over many examples. Plotted against the rank (1 for the top
prediction, C for the last) on log-log axes, the mean curve is close to a
straight line: the probability at rank r falls off like a power of r,
`p(r) ~ A * r ** -s`, as word frequencies do in Zipf's law. This is the
observation Zipf's label smoothing starts from: it asks every example's
non-target classes to follow `r ** -power`, all through training (see
docs/method.md section 1).

**What this module measures.**

* `ranked_probability_sums` adds up, over the examples of a batch, the
  descending-sorted softmax (ranks 1..C) and the descending-sorted
  *non-target* distribution (the target class removed, the other C - 1
  probabilities renormalised to sum to 1: the distribution Zipf's LS
  shapes). It keeps the examples the model classifies correctly apart from
  the misclassified ones, with the counts beside the sums. Sums and counts
  add across batches and devices exactly, so the mean curve of a whole
  evaluation split does not depend on how it was batched or sharded.
* `fit_power_law` fits a line in log-log space to a mean curve and returns
  the Zipf exponent `s` (the negated slope), the intercept and R^2.
* `zipf_scores` fits each example's own ranked distribution (one vectorised
  pass) and `zipf_score_summary` gives the batch mean and spread of the
  exponents and R^2 values.

**How to read a fit.** R^2 says how straight the curve is on log-log axes
over the fitted ranks, 1 meaning exactly a power law. The exponent says how
steep it is: `s = 1` is Zipf's classic law (rank 10 gets a tenth of rank 1);
a larger `s` puts more of the mass on the first few ranks. Read both against
a baseline: random logits already give a curve with a fairly high R^2 over
some rank ranges (run `python -m experiments.zipf_law --toy gaussian` to see
what chance alone gives), so a fit says something about a model only where
it differs from that. The first rank of the full softmax carries the
model's confidence in its top class and usually sits off the line followed
by the others; the non-target curve, or a rank range that starts at 2, shows
the shape of the rest. A curve of mostly tiny probabilities is still fitted
in log space, so every rank weighs the same in the fit, whatever its
probability.

This module needs jax and numpy only and runs under `jax.jit`, `pmap` and
`shard_map`; it must not import flax, optax or TensorFlow.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from zipfls_jax import validation

SUBSETS = ("all", "correct", "incorrect")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RankedProbabilitySums:
  """Sums of ranked probabilities and example counts, split by correctness.

  Row 0 of every field is the examples whose top-1 prediction is the label
  (no class scores strictly higher than the label), row 1 the others.
  Add two of these with `+` (batches) or `jax.lax.psum` (devices); divide
  only at the end with `mean`.

  Attributes:
    probs: (2, C) float32, the sum over examples of the descending-sorted
      softmax; column r - 1 holds rank r.
    nontarget: (2, C - 1) float32, the same for the non-target distribution
      (target removed, the rest renormalised to sum to 1).
    count: (2,) float32, the number of examples summed in each row.
  """
  probs: jax.Array
  nontarget: jax.Array
  count: jax.Array

  @classmethod
  def zeros(cls, num_classes: int) -> "RankedProbabilitySums":
    """An empty accumulator for `num_classes` classes."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
      raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
    return cls(probs=jnp.zeros((2, num_classes), jnp.float32),
               nontarget=jnp.zeros((2, num_classes - 1), jnp.float32),
               count=jnp.zeros((2,), jnp.float32))

  def __add__(self, other: "RankedProbabilitySums") -> "RankedProbabilitySums":
    return jax.tree.map(jnp.add, self, other)

  @property
  def num_classes(self) -> int:
    return self.probs.shape[-1]

  def total(self, subset: str = "all") -> jax.Array:
    """The number of examples in `subset` ('all', 'correct', 'incorrect')."""
    return _select(self.count, subset)

  def mean(self, subset: str = "all", *, nontarget: bool = False) -> jax.Array:
    """The mean ranked curve of `subset`: (C,), or (C - 1,) with `nontarget`.

    `subset` is 'all', 'correct' or 'incorrect'. A subset with no examples
    gives zeros (its sum divided by max(count, 1)).
    """
    sums = _select(self.nontarget if nontarget else self.probs, subset)
    return sums / jnp.maximum(_select(self.count, subset), 1.0)


def _select(rows, subset: str):
  if subset not in SUBSETS:
    raise ValueError(f"`subset` must be one of {SUBSETS}, got {subset!r}.")
  if subset == "all":
    return rows[0] + rows[1]
  return rows[0] if subset == "correct" else rows[1]


class _SortedLogProbs(NamedTuple):
  log_probs: jax.Array            # (N, C) descending
  nontarget_log_probs: Optional[jax.Array]  # (N, C - 1) descending, or None
  correct: Optional[jax.Array]    # (N,) bool, or None


def _sorted_log_probs(logits: jax.Array, labels: Optional[jax.Array]) -> _SortedLogProbs:
  """Descending log-softmax and, with labels, the non-target one, from one sort.

  Softmax preserves the order of the logits, so one sort of the logits ranks
  both distributions: removing the target from the sorted row leaves the
  non-target classes sorted. The target sits at position `k`, the number of
  classes scoring strictly higher (with ties, any equal value is the same
  number). The non-target normaliser is a log-sum-exp over the remaining
  logits rather than `1 - p_target`, which would cancel to 0 for a
  confident prediction.
  """
  logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  ranked = jnp.sort(logits, axis=-1, stable=False, descending=True)
  log_probs = ranked - jax.nn.logsumexp(ranked, axis=-1, keepdims=True)
  if labels is None:
    return _SortedLogProbs(log_probs, None, None)
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  position = jnp.sum(logits > label_logit, axis=-1, keepdims=True)
  before = jnp.arange(logits.shape[-1] - 1) < position
  rest = jnp.where(before, ranked[:, :-1], ranked[:, 1:])
  nontarget = rest - jax.nn.logsumexp(rest, axis=-1, keepdims=True)
  return _SortedLogProbs(log_probs, nontarget, position[:, 0] == 0)


def _check_batch(logits, labels, where) -> int:
  num_classes = validation.check_logits_labels(logits, labels)
  if jnp.ndim(logits) != 2:
    raise ValueError(f"`logits` must have shape (N, C), got {tuple(jnp.shape(logits))}.")
  validation.check_where(where, jnp.shape(labels))
  return num_classes


def ranked_probability_sums(logits: jax.Array,
                            labels: jax.Array,
                            *,
                            where: Optional[jax.Array] = None,
                            axis_name=None) -> RankedProbabilitySums:
  """Sums of each example's descending-sorted softmax, for an exact mean curve.

  For example i with softmax p_i and label y_i, sorted so that
  p_i(1) >= ... >= p_i(C), this adds p_i(r) into column r - 1 of
  `probs[g]`, with g = 0 if y_i is top-1 and g = 1 otherwise. The non-target
  distribution q_i(j) = p_i(j) / (1 - p_i(y_i)), j != y_i, sorted the same
  way, goes into `nontarget[g]`. `RankedProbabilitySums.mean` divides by the
  counts at the end.

  Args:
    logits: (N, C) float logits (bf16 is computed in float32).
    labels: (N,) int labels in [0, C).
    where: optional (N,) bool; rows where it is False (padding) add nothing,
      whatever their logits.
    axis_name: inside `pmap`/`shard_map`, the device axis to sum over (sums
      and counts separately, so the mean is the global batch's). Leave None
      under `jax.jit` on global arrays, whose sums are already global.

  Returns:
    A `RankedProbabilitySums` of this batch (global with `axis_name`).

  Example:
    >>> import jax.numpy as jnp
    >>> sums = ranked_probability_sums(jnp.log(jnp.array([[0.2, 0.5, 0.3]])),
    ...                                jnp.array([0]))
    >>> [round(float(p), 3) for p in sums.mean()]
    [0.5, 0.3, 0.2]
    >>> [round(float(q), 3) for q in sums.mean(nontarget=True)]  # label 0 (p = 0.2) removed
    [0.625, 0.375]
  """
  _check_batch(logits, labels, where)
  ranked = _sorted_log_probs(logits, labels)
  keep = jnp.ones(labels.shape, jnp.bool_) if where is None else where
  groups = (keep & ranked.correct, keep & ~ranked.correct)

  def group_sums(values):
    # Selects, not multiplies, so NaN logits in padding rows cannot leak.
    return jnp.stack([jnp.sum(jnp.where(g[:, None], values, 0.0), axis=0) for g in groups])

  sums = RankedProbabilitySums(
      probs=group_sums(jnp.exp(ranked.log_probs)),
      nontarget=group_sums(jnp.exp(ranked.nontarget_log_probs)),
      count=jnp.stack([jnp.sum(g, dtype=jnp.float32) for g in groups]))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


class PowerLawFit(NamedTuple):
  """A least-squares line through (log r, log p(r)).

  `log p(r) ~= intercept - exponent * log r`, natural logarithms, i.e.
  `p(r) ~= exp(intercept) * r ** -exponent`.

  Attributes:
    exponent: the Zipf exponent s, the negated slope of the line.
    intercept: the line's value at log r = 0 (rank 1), in log probability.
    r_squared: 1 - (residual sum of squares) / (total sum of squares of
      log p about its mean), over the fitted points.
    num_points: how many ranks entered the fit (zeros are left out).
  """
  exponent: jax.Array
  intercept: jax.Array
  r_squared: jax.Array
  num_points: jax.Array


def _rank_slice(ranks: Optional[Tuple[int, int]], length: int) -> Tuple[int, int]:
  """The 1-based inclusive `ranks` range as (first, last), checked."""
  if ranks is None:
    return 1, length
  try:
    first, last = (int(r) for r in ranks)
  except (TypeError, ValueError):
    raise TypeError(f"`ranks` must be a pair of ints (first, last), got {ranks!r}.") from None
  if not 1 <= first < last <= length:
    raise ValueError(f"`ranks` must satisfy 1 <= first < last <= {length} (the curve's "
                     f"length), got ({first}, {last}).")
  return first, last


def _fit_log_log(log_p: jax.Array, first: int, last: int) -> PowerLawFit:
  """Least squares of log_p[..., r - 1] on log r over ranks first..last; non-finite points dropped."""
  y = log_p[..., first - 1:last]
  x = jnp.log(jnp.arange(first, last + 1, dtype=y.dtype))
  valid = jnp.isfinite(y)
  n = jnp.sum(valid, axis=-1, dtype=y.dtype)
  safe_n = jnp.maximum(n, 1.0)
  mean_x = jnp.sum(jnp.where(valid, x, 0.0), axis=-1) / safe_n
  mean_y = jnp.sum(jnp.where(valid, y, 0.0), axis=-1) / safe_n
  dx = jnp.where(valid, x - mean_x[..., None], 0.0)
  dy = jnp.where(valid, y - mean_y[..., None], 0.0)
  sxx = jnp.sum(dx * dx, axis=-1)
  slope = jnp.sum(dx * dy, axis=-1) / jnp.where(sxx > 0, sxx, 1.0)
  # Residuals summed directly: `syy - slope * sxy` would cancel for good fits.
  ss_res = jnp.sum(jnp.square(dy - slope[..., None] * dx), axis=-1)
  ss_tot = jnp.sum(dy * dy, axis=-1)
  # A flat curve (every point equal) is fitted exactly by the flat line.
  r_squared = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), 1.0)
  ok = n >= 2
  nan = jnp.asarray(jnp.nan, y.dtype)
  return PowerLawFit(exponent=jnp.where(ok, -slope, nan),
                     intercept=jnp.where(ok, mean_y - slope * mean_x, nan),
                     r_squared=jnp.where(ok, r_squared, nan),
                     num_points=n.astype(jnp.int32))


def fit_power_law(mean_probs: jax.Array, *,
                  ranks: Optional[Tuple[int, int]] = None) -> PowerLawFit:
  """Fits `p(r) = A * r ** -s` to a ranked curve by least squares in log-log space.

  Entry r - 1 of `mean_probs` is the probability at rank r. Over the ranks
  `first..last` (inclusive) this fits the ordinary least-squares line
  `log p(r) = intercept + slope * log r` (natural logs, every rank weighted
  the same) and returns `exponent = -slope`, `intercept` and the line's R^2.
  The ranks are evenly spaced in r, not in log r, so the high ranks hold
  most of the points: over ranks 1..1000, 900 of them lie past rank 100,
  and the fit follows the tail more than the first few ranks. Choose
  `ranks` to look at one part of the curve.
  Ranks whose value is 0 (or not finite) have no logarithm: they are left
  out of the fit, and `num_points` says how many ranks remained. With fewer
  than two, every field but `num_points` is NaN. If all fitted values are
  equal the flat line fits them exactly: exponent 0, R^2 = 1.

  Args:
    mean_probs: (..., R) non-negative, e.g. `RankedProbabilitySums.mean()`;
      leading axes are fitted independently.
    ranks: (first, last), 1-based and inclusive, with
      1 <= first < last <= R. Default: every rank.

  Returns:
    A `PowerLawFit` of arrays of shape `mean_probs.shape[:-1]`.

  Example:
    >>> import jax.numpy as jnp
    >>> fit = fit_power_law(0.5 * jnp.arange(1.0, 101.0) ** -1.2, ranks=(2, 100))
    >>> round(float(fit.exponent), 4), round(float(fit.r_squared), 4)
    (1.2, 1.0)
  """
  validation.check_float("mean_probs", mean_probs)
  if jnp.ndim(mean_probs) < 1 or jnp.shape(mean_probs)[-1] < 2:
    raise ValueError("`mean_probs` must have at least 2 ranks on its last axis, got shape "
                     f"{tuple(jnp.shape(mean_probs))}.")
  first, last = _rank_slice(ranks, jnp.shape(mean_probs)[-1])
  return _fit_probs(mean_probs, first, last)


# Jitted so that a fit called eagerly on a host curve (once per evaluation)
# is one compiled call, not a dispatch per operation.
@functools.partial(jax.jit, static_argnums=(1, 2))
def _fit_probs(mean_probs: jax.Array, first: int, last: int) -> PowerLawFit:
  mean_probs = mean_probs.astype(jnp.promote_types(mean_probs.dtype, jnp.float32))
  # log(0) = -inf, which `_fit_log_log` leaves out.
  return _fit_log_log(jnp.log(jnp.maximum(mean_probs, 0.0)), first, last)


def zipf_scores(logits: jax.Array, *,
                labels: Optional[jax.Array] = None,
                ranks: Optional[Tuple[int, int]] = None) -> PowerLawFit:
  """Each example's own power-law fit: how Zipf-like its ranked prediction is.

  The fit of `fit_power_law`, applied to every row's descending-sorted
  softmax at once. The log-probabilities come straight from the logits
  (log-softmax), so a probability that underflows to 0 in float32 is still
  fitted at its true, very negative, log value.

  Args:
    logits: (N, C) float.
    labels: optional (N,) int. If given, each row's target class is removed
      and the fit is over the C - 1 non-target classes, renormalised.
    ranks: (first, last) as in `fit_power_law`, over C ranks (C - 1 with
      labels). Default: every rank.

  Returns:
    A `PowerLawFit` of (N,) arrays.
  """
  validation.check_float("logits", logits)
  if jnp.ndim(logits) != 2:
    raise ValueError(f"`logits` must have shape (N, C), got {tuple(jnp.shape(logits))}.")
  if labels is not None:
    validation.check_logits_labels(logits, labels)
  validation.check_num_classes("logits", jnp.shape(logits))
  ranked = _sorted_log_probs(logits, labels)
  log_p = ranked.log_probs if labels is None else ranked.nontarget_log_probs
  return _fit_log_log(log_p, *_rank_slice(ranks, log_p.shape[-1]))


def zipf_score_summary(scores: PowerLawFit, *,
                       where: Optional[jax.Array] = None,
                       axis_name=None) -> Dict[str, jax.Array]:
  """Mean and spread of per-example `zipf_scores` over a (masked) batch.

  Returns float32 scalars 'exponent_mean', 'exponent_std', 'r_squared_mean',
  'r_squared_std' (population std, over the rows where `where` is True)
  and 'count'. With `axis_name` the sums of x, x^2 and the count are
  `psum`'d before dividing, so the result is the global batch's.
  """
  if not isinstance(scores, PowerLawFit):
    raise TypeError(f"`scores` must be the PowerLawFit of zipf_scores, got "
                    f"{type(scores).__name__}.")
  validation.check_where(where, jnp.shape(scores.exponent))
  keep = jnp.ones(jnp.shape(scores.exponent), jnp.bool_) if where is None else where
  sums = {"count": jnp.sum(keep, dtype=jnp.float32)}
  for name in ("exponent", "r_squared"):
    value = getattr(scores, name).astype(jnp.float32)
    sums[name] = jnp.sum(jnp.where(keep, value, 0.0))
    sums[name + "_sq"] = jnp.sum(jnp.where(keep, value * value, 0.0))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  count = jnp.maximum(sums["count"], 1.0)
  out = {"count": sums["count"]}
  for name in ("exponent", "r_squared"):
    mean = sums[name] / count
    out[name + "_mean"] = mean
    out[name + "_std"] = jnp.sqrt(jnp.maximum(sums[name + "_sq"] / count - mean * mean, 0.0))
  return out


def power_law_curve(fit: PowerLawFit, num_ranks: int, first: int = 1) -> np.ndarray:
  """The fitted line as probabilities at ranks first..num_ranks (for plots)."""
  r = np.arange(first, num_ranks + 1, dtype=np.float64)
  return np.exp(float(fit.intercept)) * r ** -float(fit.exponent)
