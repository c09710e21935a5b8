"""Training methods: CE, LS, Zipf's LS and the self-distillation baselines.

Every method is a `Method` (see `base`): it declares what it needs from the
data and the model, and computes its loss from one or more forward passes.
`METHODS` maps each value of `config.loss.method` to its class and
`from_config` builds the method of a config's `loss` block:

* 'ce', 'ls', 'zipf', 'ls_zipf' (`label_smoothing.Objective`): flat keys
  of `config.loss` (lam, ls_eps, the target distribution, ...);
* 'tf_kd', 'cs_kd', 'bake', 'ddgsd', 'byot': their hyperparameters in the
  block `config.loss.<name>` (e.g. `config.loss.cs_kd.temperature`);
* 'ols' and 'ps_kd', which carry state across epochs in the train state
  (OLS a class matrix, with no hyperparameters: its block is empty; PS-KD
  every example's last prediction);
* 'ban', knowledge distillation from a frozen teacher run named by
  `config.teacher.workdir` (born-again networks when it is the same model).

Adding a method: one module here with a `Method` subclass, and its entry
in `METHODS`. The comparison and every method's formula are in
docs/method.md section 4.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

from zipfls_jax.training.methods import base
from zipfls_jax.training.methods.base import (DataNeeds, Forward, Method, MethodOutput,
                                              ModelNeeds, global_mean)
from zipfls_jax.training.methods.bake import BAKE
from zipfls_jax.training.methods.ban import BAN
from zipfls_jax.training.methods.byot import BYOT
from zipfls_jax.training.methods.cs_kd import CSKD
from zipfls_jax.training.methods.ddgsd import DDGSD
from zipfls_jax.training.methods.label_smoothing import Objective, compute_loss
from zipfls_jax.training.methods.ols import OLS
from zipfls_jax.training.methods.ps_kd import PSKD
from zipfls_jax.training.methods.tf_kd import TFKD

# Methods whose hyperparameters live in a block `config.loss.<block>`.
BLOCK_METHODS = (TFKD, CSKD, BAKE, DDGSD, BYOT, OLS, PSKD, BAN)
METHODS: Dict[str, type] = {
    **{name: Objective for name in ("ce", "ls", "zipf", "ls_zipf")},
    **{cls.name: cls for cls in BLOCK_METHODS},
}
METHOD_NAMES = tuple(METHODS)


def default_loss_config() -> Dict[str, Any]:
  """Every key of `config.loss` with its default: the family's flat keys, then the blocks."""
  return {**Objective().to_config(), **{cls.block: cls.default_block() for cls in BLOCK_METHODS}}


def from_config(loss_config: Mapping[str, Any]) -> Method:
  """The method that a config's `loss` block selects (`loss.method`), checked.

  Raises:
    ValueError: an unknown method, an unknown key or block, a bad value (each
      naming its config key), a block changed for a method that the run does
      not train (it would be silently ignored), or a flat key that the chosen
      method cannot honour (`exit_weight` outside the CE / LS / Zipf family).
  """
  values = base.plain_dict(loss_config)
  name = values.get("method", "ce")
  if name not in METHODS:
    raise ValueError(f"config.loss.method must be one of {METHOD_NAMES}, got {name!r}.")
  known_blocks = {cls.block: cls for cls in BLOCK_METHODS}
  blocks = {k: v for k, v in values.items() if isinstance(v, Mapping)}
  unknown = sorted(set(blocks) - set(known_blocks))
  if unknown:
    raise ValueError(f"Unknown block(s) in config.loss: {unknown}; the method blocks are "
                     f"{sorted(known_blocks)}.")
  cls = METHODS[name]
  for block, values_of_block in blocks.items():
    other = known_blocks[block]
    if other is cls:
      continue
    changed = sorted(k for k, v in values_of_block.items()
                     if other.default_block().get(k, object()) != v)
    if changed:
      raise ValueError(
          f"config.loss.{block} sets {changed}, but config.loss.method is {name!r}, which "
          f"does not read them; set config.loss.method={block!r} or leave the block as is.")
  if cls is Objective:
    return Objective.from_config(values)
  # The family's flat keys are still checked (a bad value is an error whichever
  # method runs), as those of a CE run.
  flat = Objective.from_config(
      {k: v for k, v in values.items() if k not in blocks} | {"method": "ce"})
  if flat.exit_weight:
    raise ValueError(f"config.loss.exit_weight={flat.exit_weight} adds exit cross-entropy to "
                     f"the CE / LS / Zipf family only; {name!r} does not read it (set it to 0).")
  return cls.from_block(blocks.get(cls.block, {}))


__all__ = [
    "BAKE", "BAN", "BLOCK_METHODS", "BYOT", "CSKD", "DDGSD", "DataNeeds", "Forward", "METHODS", "OLS",
    "METHOD_NAMES", "Method", "MethodOutput", "ModelNeeds", "Objective", "PSKD", "TFKD",
    "compute_loss", "default_loss_config", "from_config", "global_mean",
]
