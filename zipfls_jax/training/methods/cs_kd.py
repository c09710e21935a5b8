"""CS-KD: class-wise self-knowledge distillation between same-class pairs.

Yun et al., "Regularizing Class-wise Predictions via Self-knowledge
Distillation", CVPR 2020 (docs/method.md section 4). The batch comes from
the class-paired sampler: rows 2i (anchor) and 2i + 1 (friend) share a
class. Two forward passes, each with its own BatchNorm batch statistics, as
in the CS-KD code and the Zipf authors':

    anchors z_a = f(x[0::2]) (with gradient), friends z_f = f(x[1::2])
    (without), loss = mean CE(z_a, y_a)
                      + weight * mean T^2 KL(softmax(z_f/T) || softmax(z_a/T))

(`zipfls_jax.self_distillation.cs_kd_loss`). The logged top-1/top-5 are
the anchors'.
"""
from __future__ import annotations

import dataclasses

import jax

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


def split_pairs(x: jax.Array):
  """(rows 0, 2, 4, ..., rows 1, 3, 5, ...) of a batch of pairs.

  A reshape to (N/2, 2, ...) keeps each pair in one device's rows, so the
  split is local to every device under a sharded batch.
  """
  pairs = x.reshape(x.shape[0] // 2, 2, *x.shape[1:])
  return pairs[:, 0], pairs[:, 1]


@dataclasses.dataclass(frozen=True)
class CSKD(base.Method):
  """CS-KD; each field is `config.loss.cs_kd.<field>`.

  Attributes:
    temperature: T of the distillation (4, the CS-KD code's).
    weight: lambda, the term's weight: 1 on CIFAR and TinyImageNet, 3 for
      the ResNet50 (the Zipf authors' runs).
  """
  temperature: float = 4.0
  weight: float = 1.0

  name = "cs_kd"
  block = "cs_kd"

  @property
  def data_needs(self) -> base.DataNeeds:
    return base.DataNeeds(friends=1)

  @property
  def forward_passes(self) -> int:
    return 2

  def _term(self, anchor_logits, friend_logits):
    return self_distillation.cs_kd_loss(anchor_logits, friend_logits,
                                        temperature=self.temperature)

  def validate(self) -> None:
    base.check_weight("weight", self.weight)
    jax.eval_shape(self._term, base.abstract(2, 3), base.abstract(2, 3))

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    anchors, friends = split_pairs(batch["image"])
    labels, _ = split_pairs(batch["label"])
    anchor = forward(anchors)
    friend = forward(friends, gradient=False)
    ce = base.cross_entropy(anchor.logits, labels, axis_name)
    term = base.global_mean(self._term(anchor.logits, friend.logits), axis_name)
    loss = ce + self.weight * term
    return base.MethodOutput(loss, {"loss": loss, "ce": ce, "cs_kd": term}, anchor.logits,
                             labels, state)
