"""What every model of `zipfls_jax.models` returns, and how exits join it.

`ModelOutput` is the one structure a training step reads: pooled logits for
cross-entropy and evaluation, pooled features, optional dense votes for the
Zipf target (docs/method.md section 1.1), the intermediate exits' logits and,
for BYOT's bottleneck exits, their pooled features. It holds arrays
only, so it passes through `jax.jit`, `shard_map` and `pmap` as a pytree. This
module computes nothing itself; the heads fill it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class ModelOutput:
  """Outputs of a classifier with a voting head.

  Attributes:
    logits: (N, C) float32 logits of the globally pooled features.
    features: (N, D) float32 pooled features (the classifier's input).
    votes: (N, K) int32 class ids, one per voting position, or None unless
      votes were asked for. With exits and `vote_exits`, the final head's
      votes come first, then each exit's, shallowest exit first.
    exit_logits: (N, C) float32 logits of each intermediate exit, shallowest
      first; empty without exits.
    exit_features: (N, D) float32 pooled features of each bottleneck exit
      (`exit_type='bottleneck'`), shallowest first: the output of the exit's
      bottleneck, globally pooled, with the final `features`' width D. Empty
      without exits and for linear exits, whose features are the stage's
      own (of another width).
  """
  logits: jax.Array
  features: jax.Array
  votes: Optional[jax.Array] = None
  exit_logits: Tuple[jax.Array, ...] = ()
  exit_features: Tuple[jax.Array, ...] = ()


def join_exits(final: ModelOutput,
               exits: Sequence[ModelOutput],
               *,
               vote_exits: bool,
               exit_features: bool = False) -> ModelOutput:
  """Adds the exit heads' logits (and votes, if `vote_exits`) to `final`.

  With `exit_features`, the exits' pooled features go to `exit_features`
  too (bottleneck exits, whose features have the final head's width).

  Votes are concatenated along K in the order final, then exits shallowest
  first; the ranking of docs/method.md section 1.2 only counts votes, so the order matters only
  to code that slices the votes back apart.
  """
  votes = final.votes
  if votes is not None and vote_exits:
    exit_votes = [e.votes for e in exits]
    if any(v is None for v in exit_votes):
      raise ValueError("`vote_exits` needs every exit head to have voted.")
    votes = jnp.concatenate([votes, *exit_votes], axis=1)
  return final.replace(
      votes=votes, exit_logits=tuple(e.logits for e in exits),
      exit_features=tuple(e.features for e in exits) if exit_features else ())
