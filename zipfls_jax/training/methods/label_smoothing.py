"""The label-smoothing family of methods: CE, label smoothing and Zipf's LS.

`Objective` is the validated, hashable description of these four methods
('ce', 'ls', 'zipf', 'ls_zipf'; built from the flat keys of a config's
`loss` block), a `zipfls_jax.training.methods.Method` like the baselines;
`compute_loss` evaluates it on a model's output with the functions of
`zipfls_jax`, returning the scalar to differentiate and its parts for
logging. Their total loss (docs/method.md section 2):

    mean(CE(z, y)) + lam * mean(KL)            (or masked to correct examples)
      + alpha * sum_exits mean(CE(z_exit, y))

The target distribution's options are `zipfls_jax.TargetDistribution`'s, and
its validation is theirs: this module only maps the config's flat keys onto
it and names the config key in the error. With `axis_name` (inside shard_map
or pmap) every mean is over the global batch, so the value and its gradient
equal the single-device ones. This module must not import data,
checkpointing or TensorFlow.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

import zipfls_jax
from zipfls_jax.training.methods.base import (Method, MethodOutput, ModelNeeds,
                                              global_mean, plain_dict)

FAMILY = ("ce", "ls", "zipf", "ls_zipf")
# The config's loss keys that hold the target distribution: `distribution` is
# its name, the others are TargetDistribution's fields of the same name.
TARGET_KEYS = ("distribution",) + tuple(
    f.name for f in dataclasses.fields(zipfls_jax.TargetDistribution) if f.name != "name")


@dataclasses.dataclass(frozen=True)
class Objective(Method):
  """CE, LS or Zipf's LS; each attribute is the config key `loss.<name>`.

  Attributes:
    method: 'ce' (cross-entropy), 'ls' (label smoothing, eps/(C-1) on
      non-targets), 'zipf' (Zipf's LS: CE + lam * KL to the Zipf targets) or
      'ls_zipf' (CE against (1 - eps) onehot + eps * Zipf targets).
    ls_eps: smoothing mass for 'ls' and 'ls_zipf'.
    lam: weight of the Zipf KL term ('zipf'); `zipfls_jax.DEFAULT_LAM`.
    target: the target distribution, a `zipfls_jax.TargetDistribution`. In
      a config its fields are flat keys: `loss.distribution` (its name),
      `loss.power`, `loss.smallest_prob`, `loss.decay`, `loss.lower_bound`,
      `loss.upper_bound`.
    rank_by: 'votes' (dense votes from the model, the paper's default) or
      'logits' (rank the logits themselves, the ablation).
    correct_only: average the KL term over correctly classified examples
      only (`zipfls_jax.topk_correct`; count summed over the global batch).
    exit_weight: alpha, the weight of each intermediate exit's CE.
  """
  method: str = "ce"
  ls_eps: float = 0.1
  lam: float = zipfls_jax.DEFAULT_LAM
  target: zipfls_jax.TargetDistribution = zipfls_jax.TargetDistribution()
  rank_by: str = "votes"
  correct_only: bool = False
  exit_weight: float = 0.0

  def __post_init__(self):
    if self.method not in FAMILY:
      raise ValueError(f"config.loss.method must be one of {FAMILY} for an Objective, got "
                       f"{self.method!r}.")
    if self.rank_by not in zipfls_jax.RANK_BY:
      raise ValueError(f"config.loss.rank_by must be one of {zipfls_jax.RANK_BY}, "
                       f"got {self.rank_by!r}.")
    if not isinstance(self.target, zipfls_jax.TargetDistribution):
      raise TypeError("Objective.target must be a zipfls_jax.TargetDistribution, got "
                      f"{type(self.target).__name__}.")
    if not 0.0 <= self.ls_eps <= 1.0:   # NaN fails these comparisons too
      raise ValueError(f"config.loss.ls_eps must lie in [0, 1], got {self.ls_eps}.")
    if not self.lam >= 0:
      raise ValueError(f"config.loss.lam must be >= 0, got {self.lam}.")
    if not self.exit_weight >= 0:
      raise ValueError(f"config.loss.exit_weight must be >= 0, got {self.exit_weight}.")

  @property
  def name(self) -> str:
    return self.method

  @property
  def model_needs(self) -> ModelNeeds:
    return ModelNeeds(votes=self.needs_votes)

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> MethodOutput:
    """One forward pass; `compute_loss` of its output."""
    labels = batch["label"]
    output = forward(batch["image"], votes=self.needs_votes)
    loss, parts = compute_loss(self, output, labels, key=key if self.needs_key else None,
                               axis_name=axis_name)
    return MethodOutput(loss, parts, output.logits, labels, state)

  @property
  def uses_zipf_targets(self) -> bool:
    return self.method in ("zipf", "ls_zipf")

  @property
  def needs_votes(self) -> bool:
    """Whether the model must return dense votes."""
    return self.uses_zipf_targets and self.rank_by == "votes"

  @property
  def needs_key(self) -> bool:
    return self.uses_zipf_targets and self.target.is_random

  @classmethod
  def from_config(cls, loss_config: Mapping[str, Any]) -> "Objective":
    """Builds from a config's `loss` block, naming any unknown key or bad value.

    The blocks of the other methods' hyperparameters (`config.loss.<block>`,
    mappings) are not this family's and are skipped.
    """
    values = {k: v for k, v in plain_dict(loss_config).items() if not isinstance(v, Mapping)}
    known = set(cls().to_config())
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"Unknown key(s) in config.loss: {unknown}; expected a subset of "
                       f"{sorted(known)}.")
    target_values = {key: values.pop(key) for key in TARGET_KEYS if key in values}
    if "distribution" in target_values:
      target_values["name"] = target_values.pop("distribution")
    try:
      target = zipfls_jax.TargetDistribution(**target_values)
    except (TypeError, ValueError) as e:
      # TargetDistribution names its field, which is the config key too.
      raise type(e)(f"config.loss: {e}") from e
    return cls(target=target, **values)

  def to_config(self) -> Dict[str, Any]:
    """The flat `loss` block of a config that `from_config` turns back into this."""
    values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
              if f.name != "target"}
    target = dataclasses.asdict(self.target)
    values["distribution"] = target.pop("name")
    return {**values, **target}


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
        logits, labels, votes=votes, rank_by=objective.rank_by, distribution=objective.target,
        key=key)
    ce = global_mean(terms.ce, axis_name)
    if objective.correct_only:
      zipf_part = zipfls_jax.masked_batch_mean(terms.kl, terms.correct, axis_name=axis_name)
    else:
      zipf_part = global_mean(terms.kl, axis_name)
    main = ce + objective.lam * zipf_part
  elif objective.method == "ls_zipf":
    if objective.rank_by == "logits":
      scores = logits
    else:
      scores = zipfls_jax.vote_counts(votes, logits.shape[-1])
    q = zipfls_jax.zipf_targets(scores, labels, distribution=objective.target, key=key)
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
