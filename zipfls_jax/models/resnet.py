"""torchvision-style ResNets and ResNeXts (v1.5: the stride sits on the 3x3).

docs/method.md section 5, ImageNet / iNaturalist models: stem conv7x7/2-BN-ReLU-
maxpool3x3/2, four stages of basic or bottleneck blocks with a conv1x1-BN
projection shortcut where the shape changes, global average pool and one
linear classifier, which also votes on the final 7x7 map. torchvision's
initialisers: kaiming-normal fan-out convolutions, PyTorch-default classifier,
optionally a zero scale on the last BN of each residual branch. With
`exits=True` the model gets BYOT's bottleneck exits after stages 1, 2 and 3
(`zipfls_jax.models.exits`), for training only; the Zipf authors' linear
exits are defined for the CIFAR models alone. Architecture only.
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


def _last_bn_scale_init(zero_init_residual: bool):
  # Zero scale on a branch's last BN makes the block start as its shortcut.
  return nn.initializers.zeros if zero_init_residual else nn.initializers.ones


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""
  features: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  groups: int = 1
  width_per_group: int = 64
  zero_init_residual: bool = False
  expansion = 1

  @nn.compact
  def __call__(self, x):
    if self.groups != 1 or self.width_per_group != 64:
      raise ValueError(
          "BasicBlock supports only groups=1 and width_per_group=64 (as torchvision), got "
          f"groups={self.groups}, width_per_group={self.width_per_group}; use Bottleneck.")
    y = self.conv(self.features, 3, strides=self.strides, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.features, 3, name="conv2")(y)
    y = self.norm(name="bn2", scale_init=_last_bn_scale_init(self.zero_init_residual))(y)
    return nn.relu(y + _shortcut(self, x, self.features))


class Bottleneck(nn.Module):
  """conv1x1-BN-ReLU-conv3x3(grouped, strided)-BN-ReLU-conv1x1(4x)-BN, shortcut, ReLU."""
  features: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  groups: int = 1
  width_per_group: int = 64
  zero_init_residual: bool = False
  expansion = 4

  @nn.compact
  def __call__(self, x):
    width = int(self.features * (self.width_per_group / 64.0)) * self.groups
    out_features = self.features * self.expansion
    y = nn.relu(self.norm(name="bn1")(self.conv(width, 1, name="conv1")(x)))
    y = self.conv(width, 3, strides=self.strides, groups=self.groups, name="conv2")(y)
    y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(out_features, 1, name="conv3")(y)
    y = self.norm(name="bn3", scale_init=_last_bn_scale_init(self.zero_init_residual))(y)
    return nn.relu(y + _shortcut(self, x, out_features))


def _shortcut(block: nn.Module, x, out_features: int):
  """Identity, or conv1x1-BN when the block changes resolution or width."""
  if block.strides == 1 and x.shape[-1] == out_features:
    return x
  x = block.conv(out_features, 1, strides=block.strides, name="downsample_conv")(x)
  return block.norm(name="downsample_bn")(x)


class ResNet(nn.Module):
  """ResNet / ResNeXt for ImageNet-sized inputs, with a voting head.

  Attributes:
    stage_sizes: blocks per stage.
    block_cls: `BasicBlock` or `Bottleneck`.
    num_classes: C.
    base_features: width of the stem and of the first stage (doubles per stage).
    groups, width_per_group: ResNeXt cardinality and width (Bottleneck only).
    vote_upsample, dtype, bn_axis_name: as `CifarResNet`.
    zero_init_residual: zero scale on the last BN of every residual branch
      (torchvision's option), so each block starts as its shortcut.
    exits: add BYOT's bottleneck exits on the outputs of `exit_stages`
      (`zipfls_jax.models.exits`); their pooled bottleneck outputs come back
      as `exit_features`. They only add modules: without them the model and
      its parameters are torchvision's.
    exit_type: 'bottleneck', the only kind a ResNet has ('linear' is refused).
    exit_stages: 0-based stages feeding an exit, from 0..len(stage_sizes)-2;
      None for all of them (stages 1, 2 and 3 of 4).
  """
  stage_sizes: Sequence[int]
  block_cls: Any
  num_classes: int
  base_features: int = 64
  groups: int = 1
  width_per_group: int = 64
  vote_upsample: int | None = None
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  zero_init_residual: bool = False
  exits: bool = False
  exit_type: str = "bottleneck"
  exit_stages: Optional[Sequence[int]] = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, votes: bool = False) -> ModelOutput:
    layers.check_images(images)
    exits_lib.check_exit_options(type(self).__name__, exits=self.exits, exit_type=self.exit_type,
                                 vote_exits=False, exit_types=("bottleneck",))
    exit_stages = exits_lib.exit_stages_for(
        self.exit_stages, exit_type=self.exit_type,
        num_stages=len(self.stage_sizes)) if self.exits else ()
    conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=initializers.kaiming_normal_fan_out)
    norm = layers.batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)

    x = conv(self.base_features, 7, strides=2, name="conv1")(images)
    x = layers.max_pool_3x3_s2(nn.relu(norm(name="bn1")(x)))
    exit_maps = []
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = self.block_cls(
            self.base_features * 2 ** i, strides=2 if i > 0 and j == 0 else 1,
            conv=conv, norm=norm, groups=self.groups, width_per_group=self.width_per_group,
            zero_init_residual=self.zero_init_residual,
            name=f"stage{i + 1}_block{j + 1}")(x)
      if i in exit_stages:
        exit_maps.append((i, x))
    if self.exits:
      widths = [self.base_features * 2 ** i * self.block_cls.expansion
                for i in range(len(self.stage_sizes))]
      return exits_lib.bottleneck_heads(
          x, exit_maps, stage_widths=widths, num_classes=self.num_classes,
          vote_upsample=self.vote_upsample, votes=votes, norm=norm, dtype=self.dtype)
    return linear_heads(x, num_classes=self.num_classes, vote_upsample=self.vote_upsample,
                        votes=votes)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNeXt50_32x4d = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck, groups=32, width_per_group=4)
ResNeXt101_32x8d = functools.partial(
    ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck, groups=32, width_per_group=8)
# For tests: the basic and the grouped-bottleneck paths at a fraction of the cost.
ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), block_cls=BasicBlock, base_features=8)
ResNeXtTiny = functools.partial(
    ResNet, stage_sizes=(1, 1, 1, 1), block_cls=Bottleneck, base_features=8, groups=4,
    width_per_group=32)
