"""BAN / knowledge distillation from a frozen, trained teacher.

Furlanello et al., "Born-Again Neural Networks", ICML 2018 (docs/method.md
section 4). The teacher is a finished run of this package
(`config.teacher.workdir`): its model and the parameters and BatchNorm
statistics of its latest checkpoint. It runs in evaluation mode on the same
augmented batch, without gradient, and

    loss = mean CE(z, y) + weight * mean T^2 KL(softmax(t / T) || softmax(z / T))

(`zipfls_jax.self_distillation.kd_loss`; T = 1, weight 1 for BAN). Born-again
generation k + 1 is one run with generation k's workdir as teacher; the
teacher may be any architecture with the same dataset (so the same classes).

The teacher's variables are the method's state: loaded once at the start
(`zipfls_jax.training.loop`), never updated, and checkpointed with the
student, so a resumed run needs nothing from the teacher's workdir.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class BAN(base.Method):
  """BAN / KD; `temperature` and `weight` are `config.loss.ban.<field>`.

  Attributes:
    temperature: T of the distillation (1, BAN's).
    weight: the distillation term's weight (1).
    teacher: the teacher's linen model (without exits), set by the training
      loop from `config.teacher.workdir` (not a config key).
    teacher_variables: the shapes of its {'params', 'batch_stats'} (a tree
      of `jax.ShapeDtypeStruct`; not a config key).
  """
  temperature: float = 1.0
  weight: float = 1.0
  teacher: Optional[Any] = dataclasses.field(default=None, compare=False,
                                             metadata={"config": False})
  teacher_variables: Optional[Any] = dataclasses.field(default=None, compare=False,
                                                       metadata={"config": False})

  name = "ban"
  block = "ban"

  def validate(self) -> None:
    base.check_weight("weight", self.weight)
    jax.eval_shape(lambda z, t: self_distillation.kd_loss(z, t, temperature=self.temperature),
                   base.abstract(2, 3), base.abstract(2, 3))

  def with_teacher(self, teacher, teacher_variables) -> "BAN":
    return dataclasses.replace(self, teacher=teacher, teacher_variables=teacher_variables)

  def _check_teacher(self) -> None:
    if self.teacher is None or self.teacher_variables is None:
      raise ValueError("BAN needs its teacher: set config.teacher.workdir to a finished run's "
                       "workdir (the training loop loads it), or call `with_teacher`.")

  def init_state(self, num_classes: int, num_examples: int = 0):
    """Zeros of the teacher's shapes; the loop fills in the loaded teacher."""
    del num_classes, num_examples
    self._check_teacher()
    return {"teacher": jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                    self.teacher_variables)}

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    self._check_teacher()
    labels = batch["label"]
    output = forward(batch["image"])
    teacher = self.teacher.apply(jax.lax.stop_gradient(state["teacher"]), batch["image"],
                                 train=False)
    ce = base.cross_entropy(output.logits, labels, axis_name)
    term = base.global_mean(self_distillation.kd_loss(
        output.logits, teacher.logits, temperature=self.temperature), axis_name)
    loss = ce + self.weight * term
    return base.MethodOutput(loss, {"loss": loss, "ce": ce, "ban": term}, output.logits, labels,
                             state)
