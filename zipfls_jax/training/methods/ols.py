"""OLS: online label smoothing from the model's own correct predictions of the last epoch.

Zhang et al., "Delving Deep into Label Smoothing", IEEE TIP 2021
(docs/method.md section 4). The method keeps a C x C class matrix S in the
train state (`zipfls_jax.self_distillation.OLSState`): row y is the soft
label of class y. One forward pass:

    loss = mean [0.5 CE(z, y) - 0.5 sum_c S[y, c] log softmax(z)_c]

(`ols_loss`; S^0 = 0, so the first epoch trains on 0.5 CE). Every step adds
the softmax of each correctly classified example of the global batch to
row y of an accumulator (`ols_update`: summed over devices); after an
epoch's last step the accumulator, divided by its counts, becomes S
(`ols_next_epoch`, inside the compiled step). The state is checkpointed
with the rest, so a resumed run continues the same matrix.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class OLS(base.Method):
  """OLS; it has no hyperparameters (0.5 / 0.5 as the official script)."""

  name = "ols"
  block = "ols"

  def init_state(self, num_classes: int, num_examples: int = 0) -> self_distillation.OLSState:
    del num_examples
    return self_distillation.ols_init(num_classes, jnp.float32)

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    labels = batch["label"]
    output = forward(batch["image"])
    ce = base.cross_entropy(output.logits, labels, axis_name)
    loss = base.global_mean(self_distillation.ols_loss(output.logits, labels, state), axis_name)
    state = self_distillation.ols_update(state, output.logits, labels, axis_name=axis_name)
    return base.MethodOutput(loss, {"loss": loss, "ce": ce}, output.logits, labels, state)

  def end_epoch(self, state: self_distillation.OLSState) -> self_distillation.OLSState:
    return self_distillation.ols_next_epoch(state)
