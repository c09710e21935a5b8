"""DDGSD: self-distillation between two distortions of each image.

Xu and Liu, "Data-Distortion Guided Self-Distillation for Deep Neural
Networks", AAAI 2019 (no official code; docs/method.md section 4). The
pipeline gives two independent augmentations of each image ('image',
'image2'); each goes through its own forward pass (its own BatchNorm batch
statistics), and

    loss = mean CE(z1, y) + mean CE(z2, y)
           + mean [kl_weight * (KL(p1 || p2) + KL(p2 || p1))]
           + mmd_weight * ||mean f1 - mean f2||^2

(`zipfls_jax.self_distillation.ddgsd_loss`; each KL's target without
gradient; the MMD over the global batch). The logged 'ce' and top-1/top-5
are the first view's.
"""
from __future__ import annotations

import dataclasses

import jax

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base


@dataclasses.dataclass(frozen=True)
class DDGSD(base.Method):
  """DDGSD; each field is `config.loss.ddgsd.<field>`.

  Attributes:
    kl_weight: lambda1 of the symmetric KL (1).
    mmd_weight: lambda2 of the linear MMD on pooled features (5e-4, as
      third-party reimplementations use; the paper's code is not public).
  """
  kl_weight: float = 1.0
  mmd_weight: float = 5e-4

  name = "ddgsd"
  block = "ddgsd"

  @property
  def data_needs(self) -> base.DataNeeds:
    return base.DataNeeds(views=2)

  @property
  def forward_passes(self) -> int:
    return 2

  def _term(self, logits1, logits2, features1, features2, axis_name=None):
    return self_distillation.ddgsd_loss(logits1, logits2, features1, features2,
                                        kl_weight=self.kl_weight, mmd_weight=self.mmd_weight,
                                        axis_name=axis_name)

  def validate(self) -> None:
    shapes = (base.abstract(2, 3), base.abstract(2, 3), base.abstract(2, 4),
              base.abstract(2, 4))
    jax.eval_shape(self._term, *shapes)

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    labels = batch["label"]
    view1 = forward(batch["image"])
    view2 = forward(batch["image2"])
    ce1 = base.cross_entropy(view1.logits, labels, axis_name)
    ce2 = base.cross_entropy(view2.logits, labels, axis_name)
    term = base.global_mean(
        self._term(view1.logits, view2.logits, view1.features, view2.features, axis_name),
        axis_name)
    loss = ce1 + ce2 + term
    return base.MethodOutput(loss, {"loss": loss, "ce": ce1, "ce_view2": ce2, "ddgsd": term},
                             view1.logits, labels, state)
