"""The training objective of each run: CE, label smoothing or Zipf's LS.

`Objective` is the validated, hashable description of a loss (built from a
config's `loss` block); `compute_loss` evaluates it on a model's output with
the functions of `zipfls_jax`, returning the scalar to differentiate and its
parts for logging. It is where the training loop's total loss is put
together (docs/method.md section 2):

    mean(CE(z, y)) + lam * mean(KL)            (or masked to correct examples)
      + alpha * sum_exits mean(CE(z_exit, y))

With `axis_name` (inside shard_map or pmap) every mean is over the global
batch, so the value and its gradient equal the single-device ones. This
module must not import data, checkpointing or TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

import zipfls_jax
from zipfls_jax import targets as targets_lib

METHODS = ("ce", "ls", "zipf", "ls_zipf")
RANK_BY = ("votes", "logits")


@dataclasses.dataclass(frozen=True)
class Objective:
  """What to minimise.

  Attributes:
    method: 'ce' (cross-entropy), 'ls' (label smoothing, eps/(C-1) on
      non-targets), 'zipf' (Zipf's LS: CE + lam * KL to the Zipf targets) or
      'ls_zipf' (CE against (1 - eps) onehot + eps * Zipf targets).
    ls_eps: smoothing mass for 'ls' and 'ls_zipf'.
    lam: weight of the Zipf KL term ('zipf').
    power: Zipf exponent.
    distribution: target distribution over ranks (`zipfls_jax.DISTRIBUTIONS`).
    rank_by: 'votes' (dense votes from the model, the paper's default) or
      'logits' (rank the logits themselves).
    correct_only: average the KL term over correctly classified examples
      only (count summed over the global batch).
    exit_weight: alpha, the weight of each intermediate exit's CE.
    smallest_prob, decay, lower_bound, upper_bound: distribution parameters
      (see `zipfls_jax.zipf_targets`).
  """
  method: str = "ce"
  ls_eps: float = 0.1
  lam: float = 1.0
  power: float = 1.0
  distribution: str = "zipf"
  rank_by: str = "votes"
  correct_only: bool = False
  exit_weight: float = 0.0
  smallest_prob: float = 0.0
  decay: float = 1.0
  lower_bound: float = 1.0
  upper_bound: Optional[float] = None

  def __post_init__(self):
    if self.method not in METHODS:
      raise ValueError(f"loss.method must be one of {METHODS}, got {self.method!r}.")
    if self.rank_by not in RANK_BY:
      raise ValueError(f"loss.rank_by must be one of {RANK_BY}, got {self.rank_by!r}.")
    if self.distribution not in zipfls_jax.DISTRIBUTIONS:
      raise ValueError(f"loss.distribution must be one of {zipfls_jax.DISTRIBUTIONS}, "
                       f"got {self.distribution!r}.")
    if not 0.0 <= self.ls_eps <= 1.0:
      raise ValueError(f"loss.ls_eps must lie in [0, 1], got {self.ls_eps}.")
    if self.lam < 0:
      raise ValueError(f"loss.lam must be >= 0, got {self.lam}.")
    if self.exit_weight < 0:
      raise ValueError(f"loss.exit_weight must be >= 0, got {self.exit_weight}.")

  @property
  def uses_zipf_targets(self) -> bool:
    return self.method in ("zipf", "ls_zipf")

  @property
  def needs_votes(self) -> bool:
    """Whether the model must return dense votes."""
    return self.uses_zipf_targets and self.rank_by == "votes"

  @property
  def needs_key(self) -> bool:
    return self.uses_zipf_targets and self.distribution in targets_lib.RANDOM_DISTRIBUTIONS

  @property
  def distribution_options(self) -> Dict[str, Any]:
    return dict(power=self.power, distribution=self.distribution,
                smallest_prob=self.smallest_prob, decay=self.decay,
                lower_bound=self.lower_bound, upper_bound=self.upper_bound)

  @classmethod
  def from_config(cls, loss_config: Mapping[str, Any]) -> "Objective":
    """Builds from a config's `loss` block, naming any unknown key."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(loss_config)
    unknown = sorted(set(values) - fields)
    if unknown:
      raise ValueError(f"Unknown key(s) in config.loss: {unknown}; expected a subset of "
                       f"{sorted(fields)}.")
    return cls(**values)


def global_mean(values: jax.Array, axis_name=None) -> jax.Array:
  """Mean over the global batch: local mean, averaged over `axis_name`.

  Exact because every device holds the same number of examples.
  """
  mean = jnp.mean(values)
  return mean if axis_name is None else jax.lax.pmean(mean, axis_name)


def compute_loss(objective: Objective,
                 output: Any,
                 labels: jax.Array,
                 *,
                 key: Optional[jax.Array] = None,
                 axis_name=None) -> Tuple[jax.Array, Dict[str, jax.Array]]:
  """The scalar training loss and its logged parts.

  Args:
    objective: what to minimise.
    output: a `zipfls_jax.models.ModelOutput` (logits (N, C); votes (N, K)
      when `objective.needs_votes`; exit_logits, a tuple of (N, C)).
    labels: (N,) int labels.
    key: PRNG key, required by the random target distributions.
    axis_name: the device axis inside shard_map / pmap, else None.

  Returns:
    (loss, parts) where parts holds 'ce' (mean CE of the final logits),
    'zipf' (the unweighted KL term; 0 without Zipf), 'exit_ce' (sum of the
    exits' mean CE) and 'loss'.
  """
  logits = output.logits
  ce_fn = optax.softmax_cross_entropy_with_integer_labels
  zipf_part = jnp.zeros((), jnp.float32)
  votes = None
  if objective.needs_votes:
    votes = output.votes
    if votes is None:
      raise ValueError("loss.rank_by='votes' needs dense votes, but the model output has "
                       "votes=None: apply the model with votes=True.")

  if objective.method == "zipf":
    terms = zipfls_jax.zipf_label_smoothing_terms(
        logits, labels, votes=votes, key=key, **objective.distribution_options)
    ce = global_mean(terms.ce, axis_name)
    if objective.correct_only:
      zipf_part = zipfls_jax.masked_batch_mean(terms.kl, terms.correct, axis_name=axis_name)
    else:
      zipf_part = global_mean(terms.kl, axis_name)
    main = ce + objective.lam * zipf_part
  elif objective.method == "ls_zipf":
    if votes is None:
      scores = logits
    else:
      scores = zipfls_jax.vote_counts(votes, logits.shape[-1])
    q = zipfls_jax.zipf_targets(scores, labels, key=key, **objective.distribution_options)
    main = global_mean(
        zipfls_jax.label_smooth_zipf_loss(logits, labels, q, eps=objective.ls_eps), axis_name)
    ce = global_mean(ce_fn(logits.astype(jnp.float32), labels), axis_name)
  elif objective.method == "ls":
    main = global_mean(zipfls_jax.label_smoothing_loss(logits, labels, eps=objective.ls_eps),
                       axis_name)
    ce = global_mean(ce_fn(logits.astype(jnp.float32), labels), axis_name)
  else:
    ce = global_mean(ce_fn(logits.astype(jnp.float32), labels), axis_name)
    main = ce

  exit_ce = jnp.zeros((), jnp.float32)
  for exit_logits in output.exit_logits:
    exit_ce = exit_ce + global_mean(ce_fn(exit_logits.astype(jnp.float32), labels), axis_name)
  loss = main + objective.exit_weight * exit_ce
  return loss, {"loss": loss, "ce": ce, "zipf": zipf_part, "exit_ce": exit_ce}
