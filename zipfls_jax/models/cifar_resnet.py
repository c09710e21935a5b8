"""Pre-activation ResNets for 32x32 inputs, as the authors trained on CIFAR.

docs/method.md section 5: stem conv3x3 + BN + ReLU (no max-pool), four
stages of pre-activation blocks, no final BN/ReLU, global average pool and
one linear classifier; the multi-exit variant adds a linear exit on the
outputs of stages 2 and 3. With `exit_type='bottleneck'` the exits are
BYOT's instead (`zipfls_jax.models.exits`): a bottleneck to the final
map's shape, then a linear classifier, after stages 1, 2 and 3. This is the
authors' `CIFAR_ResNet` function
exactly, including their block's shortcut, which adds ReLU(BN1(x)) rather
than x. PyTorch's default initialisers, which the authors' CIFAR models
used. The module defines architecture only; losses read its `ModelOutput`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from zipfls_jax.models import exits as exits_lib
from zipfls_jax.models import initializers, layers
from zipfls_jax.models.heads import linear_heads
from zipfls_jax.models.outputs import ModelOutput


class PreActBlock(nn.Module):
  """o = ReLU(BN(x)); out = conv3x3(ReLU(BN(conv3x3(o)))) + shortcut(o).

  The shortcut is o itself, or a strided 1x1 convolution of o when the shape
  changes. It is o, not x, in the identity case too: the authors' block
  (PyTorch and MegEngine alike) applies its shortcut, an empty
  `nn.Sequential` when the shape is kept, to o. Their published numbers come
  from that function, so it is kept although He et al.'s pre-activation
  block adds x.
  """
  features: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    o = nn.relu(self.norm(name="bn1")(x))
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = self.conv(self.features, 1, strides=self.strides, name="shortcut")(o)
    else:
      shortcut = o
    y = self.conv(self.features, 3, strides=self.strides, name="conv1")(o)
    y = nn.relu(self.norm(name="bn2")(y))
    # The branch ends in a conv, not a BN: zeroing its kernel starts the branch
    # at 0 and still lets it learn. A zero BN scale before the ReLU would not:
    # ReLU's gradient at 0 is 0, so the branch would stay dead for good.
    extra = {"kernel_init": nn.initializers.zeros} if self.zero_init_residual else {}
    y = self.conv(self.features, 3, name="conv2", **extra)(y)
    return y + shortcut


class CifarResNet(nn.Module):
  """Pre-activation ResNet for small images (the authors' "CIFAR_ResNet18").

  Attributes:
    stage_sizes: blocks per stage.
    num_classes: C.
    widths: channels per stage; stages after the first halve the resolution.
    exits: add intermediate exits on the outputs of `exit_stages`. They only
      add modules: without them the model and its parameters are the same.
    exit_type: 'linear' (the authors' exits: pool, then a linear head) or
      'bottleneck' (BYOT's: the stage's map through separable-convolution
      blocks to the final map's shape, then pool and a linear head; the
      pooled bottleneck outputs come back as `exit_features`). See
      `zipfls_jax.models.exits` for what of BYOT's code is followed.
    exit_stages: 0-based stages whose output feeds an exit, or None for the
      kind's own: (1, 2), the authors' 2nd and 3rd, for linear exits; every
      stage but the last (0, 1, 2) for bottleneck exits.
    vote_exits: with linear `exits`, the exits vote too (after the final
      head's votes); bottleneck exits do not vote.
    vote_upsample: None or the bilinear factor for voting (docs/method.md
      section 1.1).
    dtype: computation dtype; parameters stay float32, logits are float32.
    bn_axis_name: axis to average BN batch statistics over (shard_map / pmap).
    zero_init_residual: start every residual branch at zero (a zero kernel
      on its last conv), so each block starts as its shortcut.
  """
  stage_sizes: Sequence[int]
  num_classes: int
  widths: Sequence[int] = (64, 128, 256, 512)
  exits: bool = False
  exit_type: str = "linear"
  exit_stages: Optional[Sequence[int]] = None
  vote_exits: bool = False
  vote_upsample: int | None = None
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, votes: bool = False) -> ModelOutput:
    layers.check_images(images)
    exits_lib.check_exit_options(type(self).__name__, exits=self.exits, exit_type=self.exit_type,
                                 vote_exits=self.vote_exits, exit_types=exits_lib.EXIT_TYPES)
    exit_stages = exits_lib.exit_stages_for(
        self.exit_stages, exit_type=self.exit_type,
        num_stages=len(self.stage_sizes)) if self.exits else ()
    conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=initializers.torch_default_kernel)
    norm = layers.batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)

    x = conv(self.widths[0], 3, name="conv1")(images)
    x = nn.relu(norm(name="bn1")(x))
    exit_maps = []
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(blocks):
        x = PreActBlock(
            width, strides=2 if i > 0 and j == 0 else 1, conv=conv, norm=norm,
            zero_init_residual=self.zero_init_residual,
            name=f"stage{i + 1}_block{j + 1}")(x)
      if i in exit_stages:
        exit_maps.append((i, x))
    if self.exits and self.exit_type == "bottleneck":
      return exits_lib.bottleneck_heads(
          x, exit_maps, stage_widths=self.widths, num_classes=self.num_classes,
          vote_upsample=self.vote_upsample, votes=votes, norm=norm, dtype=self.dtype)
    return linear_heads(x, [m for _, m in exit_maps], num_classes=self.num_classes,
                        vote_upsample=self.vote_upsample, votes=votes,
                        vote_exits=self.vote_exits)


CifarResNet18 = functools.partial(CifarResNet, stage_sizes=(2, 2, 2, 2))
CifarResNet34 = functools.partial(CifarResNet, stage_sizes=(3, 4, 6, 3))
# For tests: every code path of CifarResNet18, at a fraction of the cost.
CifarResNetTiny = functools.partial(CifarResNet, stage_sizes=(1, 1, 1, 1), widths=(8, 16, 32, 64))
