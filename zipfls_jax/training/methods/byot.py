"""BYOT ("Be Your Own Teacher"): the deep classifier teaches exits on the shallow stages.

Zhang et al., ICCV 2019; hyperparameters from the first author's code
(pytorch-self-distillation-final), since the paper gives none
(docs/method.md section 4). The model has BYOT exits after its first three
stages (`exits=True, exit_type='bottleneck'`: each a bottleneck that maps
the stage to the final feature size, then pooling and a classifier). One
forward pass:

    loss = mean CE(z, y)
           + sum_i mean [(1 - alpha) CE(z_i, y)
                         + alpha * softCE(softmax(sg(z) / T), softmax(z_i / T))]
           + beta * sum_i ||g_i - sg(g)||_F

(`zipfls_jax.self_distillation.byot_exit_loss` and `byot_feature_loss`;
g the pooled features, the final ones without gradient, the norm over the
global batch). We apply the feature term to every exit and without a
learned adaptation layer, as the paper states it; that code skips it for
the deepest exit and adds an adaptation. The exits are dropped at
evaluation.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class BYOT(base.Method):
  """BYOT; each field is `config.loss.byot.<field>`.

  Attributes:
    alpha: weight of each exit's distillation part (0.3).
    beta: weight of the feature term (0.03).
    temperature: T of the distillation (3).
  """
  alpha: float = 0.3
  beta: float = 0.03
  temperature: float = 3.0

  name = "byot"
  block = "byot"

  @property
  def model_needs(self) -> base.ModelNeeds:
    return base.ModelNeeds(exit_type="bottleneck")

  def _exit_term(self, exit_logits, logits, labels):
    return self_distillation.byot_exit_loss(exit_logits, logits, labels, alpha=self.alpha,
                                            temperature=self.temperature)

  def validate(self) -> None:
    base.check_weight("beta", self.beta)
    jax.eval_shape(self._exit_term, base.abstract(2, 3), base.abstract(2, 3),
                   base.abstract(2, dtype=jnp.int32))

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    labels = batch["label"]
    output = forward(batch["image"])
    if not output.exit_logits or len(output.exit_features) != len(output.exit_logits):
      raise ValueError("BYOT needs a model with BYOT exits (exits=True, "
                       "exit_type='bottleneck'): its output has "
                       f"{len(output.exit_logits)} exit logits and "
                       f"{len(output.exit_features)} exit features.")
    ce = base.cross_entropy(output.logits, labels, axis_name)
    exit_term = sum(base.global_mean(self._exit_term(z, output.logits, labels), axis_name)
                    for z in output.exit_logits)
    feature_term = sum(self_distillation.byot_feature_loss(g, output.features,
                                                           axis_name=axis_name)
                       for g in output.exit_features)
    loss = ce + exit_term + self.beta * feature_term
    return base.MethodOutput(
        loss, {"loss": loss, "ce": ce, "byot_exits": exit_term, "byot_features": feature_term},
        output.logits, labels, state)
