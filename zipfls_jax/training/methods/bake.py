"""BAKE: distillation towards the batch's own knowledge ensembles.

Ge et al., "Self-distillation with Batch Knowledge Ensembling Improves
ImageNet Classification", 2021 (docs/method.md section 4). One forward
pass over a class-paired batch (groups of `friends + 1` same-class images);
the targets propagate the batch's softened predictions along the affinity
of its normalised pooled features (`zipfls_jax.self_distillation.
bake_targets`), and

    loss = mean CE(z, y) + weight * mean T^2 KL(Q || softmax(z / T)).

The affinity spans the global batch in every mode: under the default jit
step the arrays are global; under the per-device step (`shard_map`,
`pmap`) each device gathers every device's features and predictions.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class BAKE(base.Method):
  """BAKE; each field is `config.loss.bake.<field>`.

  Attributes:
    temperature: T (4, BAKE's code).
    weight: lambda (1).
    omega: the propagation weight: 0.5 on CIFAR-100 and for the ResNet50,
      0.9 on TinyImageNet (the Zipf authors' runs, BAKE's default 0.5).
    friends: same-class images following each anchor: 3 on CIFAR-100
      (groups of 4, BAKE's default), 1 on TinyImageNet and ImageNet-scale
      sets.
  """
  temperature: float = 4.0
  weight: float = 1.0
  omega: float = 0.5
  friends: int = 1

  name = "bake"
  block = "bake"

  @property
  def data_needs(self) -> base.DataNeeds:
    return base.DataNeeds(friends=self.friends)

  def _term(self, features, logits, axis_name=None):
    targets = self_distillation.bake_targets(features, logits, omega=self.omega,
                                             temperature=self.temperature, axis_name=axis_name)
    return self_distillation.kd_loss(logits, targets, temperature=self.temperature,
                                     teacher_is_probs=True)

  def validate(self) -> None:
    base.check_weight("weight", self.weight)
    if isinstance(self.friends, bool) or not isinstance(self.friends, int) or self.friends < 1:
      raise ValueError(f"friends must be an int >= 1, got {self.friends!r}.")
    jax.eval_shape(self._term, base.abstract(2, 4), base.abstract(2, 3))

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    labels = batch["label"]
    output = forward(batch["image"])
    ce = base.cross_entropy(output.logits, labels, axis_name)
    term = base.global_mean(self._term(output.features, output.logits, axis_name), axis_name)
    loss = ce + self.weight * term
    return base.MethodOutput(loss, {"loss": loss, "ce": ce, "bake": term}, output.logits,
                             labels, state)
