"""Per-example losses of Zipf's Label Smoothing and the paper's LS baselines.

docs/method.md section 2: L = CE(z, y) + lam * KL(q || softmax over the
non-target logits), q the Zipf soft target. Like optax's losses these return
one value per example and never reduce; the caller takes the mean (or
`masked_batch_mean` for the correct-only variant). `where=` masks the
computation itself, as in optax: a masked example (say, padding with label
-1) gives 0 and a zero gradient, never NaN.

The vote path is fused: ranks of the K voted classes come from
`ranks.vote_statistics` (a histogram, no sort over C), every unvoted class
shares one target value, so the targets stay sparse ((N, 1) plus K
corrections) and are never built densely; CE and KL share their passes over
N x C, and a custom VJP makes the backward pass one fused pass plus a
K-sized scatter. No N x K x C array is ever built.

Must not import flax, optax or TensorFlow: users import this alone.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from zipfls_jax import ranks, validation
from zipfls_jax import targets as targets_lib
from zipfls_jax.indexing import in_range_ids, scatter_add_rows
from zipfls_jax.targets import TargetDistribution

# The weight of the Zipf term: the authors' script default (docs/method.md
# section 6 gives the per-dataset values, 0.1 or 1.0). The one default of lam:
# the training objective and the config take theirs from here.
DEFAULT_LAM = 1.0
# What the soft target ranks: the model's dense votes (the method) or the
# logits (the paper's logit-rank ablation), always an explicit choice.
RANK_BY = ("votes", "logits")


class ZipfTerms(NamedTuple):
  """Per-example parts of the Zipf LS objective, each of shape (...).

  Attributes:
    ce: cross-entropy of the logits against the label.
    kl: KL(q || softmax over the non-target logits), the Zipf term.
    correct: whether no class scores higher than the label (`topk_correct`
      with k = 1, ties in the label's favour), the mask of the correct-only
      variant.
  """
  ce: jax.Array
  kl: jax.Array
  correct: jax.Array


class _SoftTargets(NamedTuple):
  """Soft targets over the non-target classes, kept sparse where possible.

  q_j = base_j + sum_{i : ids_i = j} delta_i for j != y (the label's entry
  is ignored). `base` is (B, 1) for the vote path (every unvoted class
  shares one value) or (B, C) for dense targets; `ids`/`delta` (B, K)
  correct the voted classes (K = 0 for dense targets). `entropy` is
  sum_{j != y} q_j log q_j. None of it carries gradient.
  """
  base: jax.Array
  ids: jax.Array
  delta: jax.Array
  entropy: jax.Array


def _dense_soft_targets(q: jax.Array, labels: jax.Array) -> _SoftTargets:
  is_label = jnp.arange(q.shape[-1]) == labels[:, None]
  q = jnp.where(is_label, 0.0, jax.lax.stop_gradient(q).astype(jnp.float32))
  empty = jnp.zeros((q.shape[0], 0), jnp.int32)
  return _SoftTargets(q, empty, empty.astype(jnp.float32), xlogy(q, q).sum(-1))


def _vote_soft_targets(votes: jax.Array, labels: jax.Array, num_classes: int,
                       dist: TargetDistribution) -> _SoftTargets:
  """Zipf targets of (B, K) votes as one shared unvoted value plus K corrections.

  Every unvoted class has weight d_u (rank num_voted + 1), voted class i has
  d_i; with Z = sum_{j != y} d_j, q_u = d_u / Z and the correction at vote
  i is share_i (q_i - q_u), share_i = 1 / count_i so that a class voted
  several times is corrected once in total. Ids outside [0, C) have share 0
  and weight 0: they are ignored, as `vote_counts` drops them.
  """
  stats = ranks.vote_statistics(votes, num_classes)
  num_unvoted = num_classes - stats.num_voted
  # max(., 1): an ignored id has group size 0 and, when every class got a
  # vote, so has the (empty) unvoted group; 'unbiased_zipf' divides by it.
  d_voted = targets_lib.rank_weights(stats.rank, num_classes=num_classes, distribution=dist,
                                 group_size=jnp.maximum(stats.group_size, 1))
  d_unvoted = targets_lib.rank_weights(stats.unvoted_rank, num_classes=num_classes,
                                   distribution=dist, group_size=jnp.maximum(num_unvoted, 1))
  share = jnp.where(votes == labels[:, None], 0.0, stats.share)   # voted non-targets, once each
  d_voted = jnp.where(share > 0, d_voted, 0.0)
  # With every class voted there is no unvoted class: its rank C + 1 lies
  # outside the distribution ('linear_decay' would weigh it below 0).
  d_unvoted = jnp.where(num_unvoted > 0, d_unvoted, 0.0)
  safe_labels, label_in_range = in_range_ids(labels[:, None], num_classes)
  label_count = jnp.where(label_in_range, jnp.take_along_axis(
      stats.counts, safe_labels, axis=-1, mode="promise_in_bounds"), 0)[:, 0]
  num_other_unvoted = num_unvoted - (label_count == 0).astype(jnp.int32)

  def normaliser(d_voted, d_unvoted):
    return num_other_unvoted * d_unvoted + (share * d_voted).sum(-1)

  total = normaliser(d_voted, d_unvoted)
  # All non-target weights zero (linear_decay at its limit): uniform, as zipf_targets does.
  degenerate = total <= 0
  d_voted = jnp.where(degenerate[:, None], 1.0, d_voted)
  d_unvoted = jnp.where(degenerate, 1.0, d_unvoted)
  total = normaliser(d_voted, d_unvoted)
  q_voted = d_voted / total[:, None]
  q_unvoted = jnp.where(num_other_unvoted > 0, d_unvoted / total, 0.0)
  entropy = (num_other_unvoted * xlogy(q_unvoted, q_unvoted)
             + (share * xlogy(q_voted, q_voted)).sum(-1))
  delta = share * (q_voted - q_unvoted[:, None])
  return jax.lax.stop_gradient(_SoftTargets(q_unvoted[:, None], votes, delta, entropy))


# Outside [_TINY_SUM, _HUGE_SUM] a row's non-target exp-sum has lost
# precision to underflow or is about to overflow.
_TINY_SUM, _HUGE_SUM = 1e-20, 1e30


def _exp_rest(logits, labels, label_logit):
  """exp(z - m) off the label (0 on it), m a per-row shift, and its row sums.

  The shift is the label's own logit, a gather, so no pass over C is spent
  on a max. Only when some row's logits spread more than ~46 nats from the
  label's does its non-target sum leave the safe range; then, and only then
  (a `lax.cond`, free in normal training), the shift becomes the
  non-target max. Either way the label is excluded before exponentiating,
  so a dominant target logit (|z| up to 1e4) never cancels the rest away.

  Returns whether the second shift was taken, and (m, exp_rest, sum_rest,
  rest_logit_sum). The last is sum_{j != y} (z_j - m) under the second
  shift, where z_y - m can reach 2e4 and a sum over all classes minus the
  label's term would cancel every digit; under the first shift the label's
  own term is exactly 0, and the caller sums over all classes (zeros here).
  """
  def is_label():   # rebuilt where used: a mask passed around gets materialised
    return jnp.arange(logits.shape[-1]) == labels[:, None]

  def shifted(m):
    exp_rest = jnp.exp(jnp.where(is_label(), -jnp.inf, logits - m))
    return m, exp_rest, exp_rest.sum(-1)

  def exact():
    m = jnp.where(is_label(), -jnp.inf, logits).max(-1, keepdims=True)
    return (*shifted(m), jnp.where(is_label(), 0.0, logits - m).sum(-1))

  m, exp_rest, sum_rest = shifted(jnp.where(jnp.isfinite(label_logit), label_logit, 0.0))
  unsafe = jnp.any(~((sum_rest >= _TINY_SUM) & (sum_rest <= _HUGE_SUM)))
  # The fast branch's logit sum is left to the caller, after the cond, where
  # it fuses with the rest of the pass (computed here it cost ~20% at C = 1e4).
  fast = lambda: (m, exp_rest, sum_rest, jnp.zeros_like(sum_rest))
  return unsafe, jax.lax.cond(unsafe, exact, fast)


def _forward(logits, labels, soft):
  """CE and KL with their residuals; the primal and the VJP's forward share it.

  Passes over B x C: the masked exp (kept for the backward pass) with its
  sum, and one sum of the logits (weighted by the targets on the dense
  path); everything else is gathers at the label and the K votes.
  """
  num_classes = logits.shape[-1]
  rows_labels = labels[:, None]
  # One gather for the label and the K votes: on XLA:CPU the index
  # bookkeeping of each gather costs more than its arithmetic. Out-of-range
  # ids read class 0 (their corrections are 0); an out-of-range label makes
  # log_sumexp_rest, hence every term, NaN below.
  safe_ids, _ = in_range_ids(jnp.concatenate([rows_labels, soft.ids], axis=1), num_classes)
  gathered = jnp.take_along_axis(logits, safe_ids, axis=-1, mode="promise_in_bounds")
  raw_label_logit = gathered[:, :1]
  shifted_by_max, (m, exp_rest, sum_rest, exact_rest_sum) = _exp_rest(
      logits, labels, raw_label_logit)
  # An out-of-range label cannot raise under jit: make every term NaN instead.
  log_sumexp_rest = jnp.where((labels >= 0) & (labels < num_classes), jnp.log(sum_rest),
                              jnp.nan)
  label_logit = (raw_label_logit - m)[:, 0]
  # cross = sum_{j != y} q_j (z_j - m).
  if soft.base.shape[-1] == 1:   # the vote path: one value for every unvoted class
    rest_sum = jnp.where(shifted_by_max, exact_rest_sum, (logits - m).sum(-1) - label_logit)
    cross = soft.base[:, 0] * rest_sum
  else:   # dense targets are 0 at the label already
    cross = (soft.base * (logits - m)).sum(-1)
  cross = cross + (soft.delta * (gathered[:, 1:] - m)).sum(-1)
  ce = jax.nn.softplus(log_sumexp_rest - label_logit)
  # KL >= 0, but its three sums round separately: where q = p up to
  # rounding their few-ulp difference could fall below 0. The custom VJP
  # keeps the exact gradient, p_rest - q, under this clamp.
  kl = jnp.maximum(soft.entropy - cross + log_sumexp_rest, 0.0)
  return (ce, kl), (exp_rest, log_sumexp_rest, label_logit)


@jax.custom_vjp
def _ce_and_kl(logits, labels, soft):
  """Per-example CE over all classes and KL(q || softmax over non-targets).

  A custom VJP so the backward pass reuses the forward's exponentials in one
  elementwise pass over B x C plus K-sized scatters, instead of autodiff's
  chain of broadcasts, gathers' transposes and a second softmax.
  """
  return _forward(logits, labels, soft)[0]


def _ce_and_kl_fwd(logits, labels, soft):
  out, (exp_rest, log_sumexp_rest, label_logit) = _forward(logits, labels, soft)
  return out, (labels, soft, exp_rest, log_sumexp_rest, label_logit)


def _ce_and_kl_bwd(residuals, cotangents):
  labels, soft, exp_rest, log_sumexp_rest, label_logit = residuals
  g_ce, g_kl = cotangents
  # Off the label: d CE = p_j = p_rest_j (1 - p_y), d KL = p_rest_j - q_j,
  # p_rest the softmax over the non-target classes; on it d CE = p_y - 1
  # with p_y = sigmoid(z_y - lse_rest), and d KL = 0.
  p_label = jax.nn.sigmoid(label_logit - log_sumexp_rest)
  scale = (g_ce * (1.0 - p_label) + g_kl) * jnp.exp(-log_sumexp_rest)
  is_label = jnp.arange(exp_rest.shape[-1]) == labels[:, None]   # fused, never stored
  grad = jnp.where(is_label, (g_ce * (p_label - 1.0))[:, None],
                   exp_rest * scale[:, None] - g_kl[:, None] * soft.base)
  safe_ids, in_range = in_range_ids(soft.ids, grad.shape[-1])
  grad = scatter_add_rows(grad, safe_ids, jnp.where(in_range, -g_kl[:, None] * soft.delta, 0.0))
  return grad, None, None


_ce_and_kl.defvjp(_ce_and_kl_fwd, _ce_and_kl_bwd)


def _apply_where(values: jax.Array, where: Optional[jax.Array]) -> jax.Array:
  return values if where is None else jnp.where(where, values, 0.0)


def _where_safe(where, logits, labels, *per_class):
  """Masked examples' inputs replaced by harmless ones (logits 0, label 0, rows 0).

  optax's `where` semantics: a masked example must not reach the
  computation at all, so padding (label -1, garbage logits) can give
  neither a NaN value nor, through 0 * NaN in a backward pass, a NaN
  gradient. Its output is zeroed afterwards by `_apply_where`.
  """
  if where is None:
    return (logits, labels, *per_class)
  where = jnp.asarray(where)
  rows = lambda x: jnp.where(where[..., None], x, jnp.zeros((), jnp.result_type(x)))
  return (rows(logits), jnp.where(where, labels, 0), *map(rows, per_class))


def _flat(x, trailing: int = 1):
  """(..., X) -> (B, X): the fused kernels work on one batch axis."""
  x = jnp.asarray(x)
  return x.reshape(-1, *x.shape[x.ndim - trailing:]) if trailing else x.reshape(-1)


def zipf_loss(logits: jax.Array,
              labels: jax.Array,
              targets: jax.Array,
              *,
              where: Optional[jax.Array] = None) -> jax.Array:
  """KL divergence from soft targets to the softmax over the non-target logits.

  loss = sum_{j != y} q_j (log q_j - log_softmax_{j != y}(z)_j), where the
  softmax runs over the C - 1 classes other than y. The label's entry of
  `targets` is ignored and the target logit gets no gradient; `targets`
  gets none at all.

  Args:
    logits: (..., C) float logits (bf16 is computed in f32).
    labels: (...) int class ids (not one-hot).
    targets: (..., C) soft targets over the non-target classes, e.g. from
      `zipf_targets`; rows should sum to 1 off the label.
    where: optional (...) bool; False examples give 0 and a zero gradient.

  Returns:
    (...) float32 per-example KL, >= 0; NaN where a label is out of range.

  Example:
    >>> z = jnp.array([[2.0, 1.0, 0.0]]); y = jnp.array([0])
    >>> q = zipf_targets(z, y)
    >>> zipf_loss(z, y, targets=q).shape
    (1,)
  """
  validation.check_logits_labels(logits, labels)
  validation.check_same_shape("targets", targets, "logits", logits)
  validation.check_where(where, jnp.shape(labels))
  batch_shape = jnp.shape(labels)
  logits, labels, targets = _where_safe(where, logits, labels, targets)
  flat_labels = _flat(labels, 0)
  soft = _dense_soft_targets(_flat(targets), flat_labels)
  _, kl = _ce_and_kl(_flat(logits).astype(jnp.float32), flat_labels, soft)
  return _apply_where(kl.reshape(batch_shape), where)


def _check_rank_by(rank_by, votes) -> None:
  if rank_by not in RANK_BY:
    raise ValueError(f"`rank_by` must be one of {', '.join(map(repr, RANK_BY))}; "
                     f"got {rank_by!r}.")
  if rank_by == "votes" and votes is None:
    raise ValueError(
        "`votes` is None, but rank_by='votes' (the default: the method itself) ranks the "
        "model's dense votes. Pass votes=..., the (..., K) class ids of `dense_votes` "
        "(apply the model with votes=True; `VotingHead` returns them). To rank the "
        "logits instead, the paper's logit-rank ablation, pass rank_by='logits'.")
  if rank_by == "logits" and votes is not None:
    raise ValueError("rank_by='logits' ranks the logits and takes no `votes`, but votes "
                     "were given: pass votes=None, or rank_by='votes' to rank the votes.")


def _zipf_terms(logits, labels, votes, rank_by, distribution, key, where) -> ZipfTerms:
  """`zipf_label_smoothing_terms`, called by both public functions."""
  num_classes = validation.check_logits_labels(logits, labels)
  dist = TargetDistribution.of(distribution)
  dist.check_call(num_classes, key)
  _check_rank_by(rank_by, votes)
  if votes is not None:
    validation.check_votes_shape(votes, labels, logits)
  validation.check_where(where, jnp.shape(labels))
  batch_shape = jnp.shape(labels)
  logits, labels = _where_safe(where, logits, labels)
  logits = _flat(logits).astype(jnp.float32)
  labels = _flat(labels, 0)
  if rank_by == "votes" and not dist.is_random:
    soft = _vote_soft_targets(_flat(votes), labels, num_classes, dist)
  else:
    scores = logits if rank_by == "logits" else ranks.vote_counts(_flat(votes), num_classes)
    soft = _dense_soft_targets(targets_lib.dense_targets(scores, labels, dist, key), labels)
  ce, kl = _ce_and_kl(logits, labels, soft)
  correct = ranks.topk_correct(logits, labels)
  ce, kl, correct = (x.reshape(batch_shape) for x in (ce, kl, correct))
  if where is not None:
    ce, kl, correct = _apply_where(ce, where), _apply_where(kl, where), correct & where
  return ZipfTerms(ce, kl, correct)


def zipf_label_smoothing_terms(logits: jax.Array,
                               labels: jax.Array,
                               *,
                               votes: Optional[jax.Array] = None,
                               rank_by: str = "votes",
                               distribution: Union[str, TargetDistribution] = "zipf",
                               key: Optional[jax.Array] = None,
                               where: Optional[jax.Array] = None) -> ZipfTerms:
  """Per-example CE, Zipf KL and correctness flags, computed together.

  The training objective is `mean(ce) + lam * mean(kl)`, or with the
  correct-only mask `mean(ce) + lam * masked_batch_mean(kl, correct)`.

  Args:
    logits: (..., C) float logits (bf16 is computed in f32).
    labels: (...) int class ids in [0, C) (not one-hot).
    votes: (..., K) int dense votes (`dense_votes`; several exits
      concatenated along K); required when rank_by='votes'. Ids outside
      [0, C) are ignored (`check_votes` catches them under `checkify`).
    rank_by: what the target ranks, always an explicit choice: 'votes'
      (the default, the method) or 'logits' (the logit-rank ablation, a
      sort over C; `votes` must then be None).
    distribution: a `TargetDistribution`, or the name of one with its
      default parameters (one of `DISTRIBUTIONS`).
    key: jax.random key, required by the random distributions.
    where: optional (...) bool; False examples give ce = kl = 0,
      correct = False and a zero gradient.

  Returns:
    `ZipfTerms(ce, kl, correct)`, float32 / bool of shape (...). An
    out-of-range label (which cannot raise under jit) gives NaN in `ce` and
    `kl`; catch it early with `check_labels` under `checkify`.
  """
  return _zipf_terms(logits, labels, votes, rank_by, distribution, key, where)


def zipf_label_smoothing_loss(logits: jax.Array,
                              labels: jax.Array,
                              *,
                              votes: Optional[jax.Array] = None,
                              rank_by: str = "votes",
                              lam: float = DEFAULT_LAM,
                              distribution: Union[str, TargetDistribution] = "zipf",
                              key: Optional[jax.Array] = None,
                              where: Optional[jax.Array] = None) -> jax.Array:
  """Zipf's Label Smoothing: per-example CE(z, y) + lam * KL(q || p_{j != y}).

  q ranks the classes by the model's dense `votes` (the method, the default
  rank_by='votes') or, only when asked with rank_by='logits', by the logits.
  See `zipf_label_smoothing_terms` for the parts and docs/method.md
  section 2 for the formula.

  Args:
    logits: (..., C) float logits.
    labels: (...) int class ids (not one-hot).
    votes: (..., K) int dense votes from `dense_votes`; required unless
      rank_by='logits'. Ids outside [0, C) are ignored.
    rank_by: 'votes' (default) or 'logits' (the logit-rank ablation).
    lam: weight of the Zipf term (`DEFAULT_LAM` = 1.0; the paper uses 0.1
      on CIFAR/ImageNet, 1.0 on TinyImageNet/iNat).
    distribution: a `TargetDistribution` (e.g. `TargetDistribution("zipf",
      power=2.0)`), or a name from `DISTRIBUTIONS` for its defaults.
    key: jax.random key, required by the random distributions.
    where: optional (...) bool; False examples give 0 and a zero gradient.

  Returns:
    (...) float32 per-example losses.

  Example:
    >>> logits = jnp.array([[2.0, 0.5, -1.0, 0.0]]); labels = jnp.array([0])
    >>> votes = jnp.array([[0, 0, 1, 3]])
    >>> loss = zipf_label_smoothing_loss(logits, labels, votes=votes, lam=0.1)
    >>> loss.shape
    (1,)
  """
  terms = _zipf_terms(logits, labels, votes, rank_by, distribution, key, where)
  return terms.ce + lam * terms.kl


def label_smoothing_loss(logits: jax.Array,
                         labels: jax.Array,
                         *,
                         eps: float,
                         where: Optional[jax.Array] = None) -> jax.Array:
  """Label smoothing as the paper's authors define it.

  Cross-entropy against (1 - eps) on y and eps / (C - 1) on each other class
  (optax's `smooth_labels` instead spreads eps / C over all C classes).

  Args:
    logits: (..., C) float logits.
    labels: (...) int class ids (not one-hot).
    eps: smoothing mass in [0, 1].
    where: optional (...) bool; False examples give 0 and a zero gradient.

  Returns:
    (...) float32 per-example losses.
  """
  num_classes = validation.check_logits_labels(logits, labels)
  _check_eps(eps)
  validation.check_where(where, jnp.shape(labels))
  uniform = jnp.full(jnp.shape(logits), 1.0 / (num_classes - 1), jnp.float32)
  return _smoothed_cross_entropy(logits, labels, uniform, eps, where)


def label_smooth_zipf_loss(logits: jax.Array,
                           labels: jax.Array,
                           targets: jax.Array,
                           *,
                           eps: float,
                           where: Optional[jax.Array] = None) -> jax.Array:
  """Cross-entropy against (1 - eps) onehot(y) + eps q (docs/method.md section 3).

  Args:
    logits: (..., C) float logits.
    labels: (...) int class ids (not one-hot).
    targets: (..., C) soft targets q, e.g. from `zipf_targets`; the label's
      entry is ignored.
    eps: smoothing mass in [0, 1].
    where: optional (...) bool; False examples give 0 and a zero gradient.

  Returns:
    (...) float32 per-example losses.
  """
  validation.check_logits_labels(logits, labels)
  validation.check_same_shape("targets", targets, "logits", logits)
  _check_eps(eps)
  validation.check_where(where, jnp.shape(labels))
  return _smoothed_cross_entropy(logits, labels, targets, eps, where)


def _check_eps(eps) -> None:
  validation.check_scalar("eps", eps)
  if not 0.0 <= eps <= 1.0:
    raise ValueError(f"`eps` must lie in [0, 1], got {eps}.")


def _smoothed_cross_entropy(logits, labels, soft, eps, where):
  logits, labels, soft = _where_safe(where, logits, labels, soft)
  logits = jnp.asarray(logits, jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  is_label = jnp.arange(logits.shape[-1]) == labels[..., None]
  soft = jnp.where(is_label, 0.0, jax.lax.stop_gradient(soft).astype(jnp.float32))
  label_log_prob = jnp.take_along_axis(log_probs, labels[..., None], axis=-1, mode="fill",
                                       fill_value=jnp.nan)[..., 0]
  loss = -(1.0 - eps) * label_log_prob - eps * (soft * log_probs).sum(-1)
  return _apply_where(loss, where)


def masked_batch_mean(values: jax.Array,
                      mask: jax.Array,
                      *,
                      axis_name=None) -> jax.Array:
  """sum(mask * values) / max(sum(mask), 1), exact across devices.

  With `axis_name` (inside pmap or shard_map) the numerator and the count
  are summed across devices separately, so the result equals the masked
  mean of the global batch, not a mean of per-device means. Under
  `jax.jit` on global arrays leave it None: the sums are already global.
  """
  validation.check_same_shape("mask", mask, "values", values)
  mask = jnp.asarray(mask)
  total = jnp.where(mask, values, 0.0).sum()
  count = mask.sum(dtype=jnp.float32)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total / jnp.maximum(count, 1.0)
