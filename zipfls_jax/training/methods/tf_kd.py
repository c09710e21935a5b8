"""TF-KD (reg): label smoothing by a hand-made "virtual teacher".

Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020 (docs/method.md section 4). One forward pass:

    (1 - reg_alpha) * mean CE(z, y) + reg_alpha * mean term(z, y)

with `zipfls_jax.self_distillation.tf_kd_regularization_loss` as the term,
as in the TF-KD paper and its code. (The Zipf authors' script ignores
reg_alpha and adds 1.0 * term to the full CE; we follow TF-KD.)
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class TFKD(base.Method):
  """TF-KD's regularization; each field is `config.loss.tf_kd.<field>`.

  Defaults are the Zipf authors' values for the CIFAR ResNet18 (also the
  TinyImageNet comparison cell); their CIFAR DenseNet121 used temperature
  40 and multiplier 1, their ResNet50 temperature 20 and multiplier 1
  (`experiments/configs/paper.py` sets them per model).

  Attributes:
    temperature: T softening the virtual teacher.
    multiplier: the term's scale.
    reg_alpha: the term's weight; CE gets 1 - reg_alpha.
    correct_prob: the virtual teacher's probability on the label.
  """
  temperature: float = 20.0
  multiplier: float = 100.0
  reg_alpha: float = 0.1
  correct_prob: float = 0.99

  name = "tf_kd"
  block = "tf_kd"

  def _term(self, logits, labels):
    return self_distillation.tf_kd_regularization_loss(
        logits, labels, temperature=self.temperature, multiplier=self.multiplier,
        correct_prob=self.correct_prob)

  def validate(self) -> None:
    base.check_weight("reg_alpha", self.reg_alpha)
    if self.reg_alpha > 1:
      raise ValueError(f"reg_alpha must lie in [0, 1], got {self.reg_alpha}.")
    jax.eval_shape(self._term, base.abstract(2, 3), base.abstract(2, dtype=jnp.int32))

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    labels = batch["label"]
    output = forward(batch["image"])
    ce = base.cross_entropy(output.logits, labels, axis_name)
    term = base.global_mean(self._term(output.logits, labels), axis_name)
    loss = (1.0 - self.reg_alpha) * ce + self.reg_alpha * term
    return base.MethodOutput(loss, {"loss": loss, "ce": ce, "tf_kd": term}, output.logits,
                             labels, state)
