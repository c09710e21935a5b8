"""DenseNets: the authors' CIFAR variant and torchvision's ImageNet one.

One class covers both (docs/method.md section 5): dense layers
BN-ReLU-1x1(bn_size * growth)-BN-ReLU-3x3(growth) whose outputs are
concatenated, transitions BN-ReLU-1x1(c * compression)-avgpool2, then a final
BN-ReLU, global average pool and one linear classifier. The CIFAR stem is a
bare conv3x3 (no BN); torchvision's is conv7x7/2-BN-ReLU-maxpool/2. The two
also differ in the order of the concatenation: the authors' CIFAR layer puts
its new channels first (`cat([new, input])`), torchvision's puts them last.
The CIFAR multi-exit variant puts an exit after the 2nd and 3rd transitions,
each with its own BN-ReLU feeding both its pooling and its votes (this
placement is the one that gives the authors' 7,127,084 parameters at
C=100). Architecture only.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from zipfls_jax.models import initializers, layers
from zipfls_jax.models.heads import linear_heads
from zipfls_jax.models.outputs import ModelOutput


class DenseLayer(nn.Module):
  """Bottleneck layer; returns its input and `growth_rate` new channels, concatenated.

  `new_first` puts the new channels before the input's (the authors' CIFAR
  layer, `torch.cat([new, x], 1)`), else after them (torchvision). The
  parameter count is the same either way, but the order decides which
  input channel each later kernel row reads, so it must match the weights'.
  """
  growth_rate: int
  bn_size: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  new_first: bool = False

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.bn_size * self.growth_rate, 1, name="conv1")(nn.relu(self.norm(name="bn1")(x)))
    y = self.conv(self.growth_rate, 3, name="conv2")(nn.relu(self.norm(name="bn2")(y)))
    return jnp.concatenate([y, x] if self.new_first else [x, y], axis=-1)


class Transition(nn.Module):
  """BN-ReLU-1x1 conv to `features` channels, then 2x2 average pooling."""
  features: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, 1, name="conv")(nn.relu(self.norm(name="bn")(x)))
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class DenseNet(nn.Module):
  """DenseNet-BC with a voting head.

  Attributes:
    block_sizes: dense layers per block.
    num_classes: C.
    growth_rate: channels each dense layer adds.
    bn_size: bottleneck width in multiples of `growth_rate`.
    compression: channel factor of the transitions (floored, as PyTorch).
    cifar_stem: conv3x3 stem for 32x32 inputs; else torchvision's ImageNet stem.
    new_channels_first: each dense layer concatenates its new channels
      before its input (the authors' CIFAR model); else after (torchvision).
    stem_features: stem channels (None: 2 * growth_rate, as both references).
    exits: add exits after the transitions that end the blocks in
      `exit_blocks` (CIFAR variant).
    exit_blocks: 0-based blocks whose transition output feeds an exit.
    vote_exits: with `exits`, the exits vote too (after the final votes).
    vote_upsample, dtype, bn_axis_name: as `CifarResNet`.
    kernel_init: convolution initialiser (PyTorch default for the authors'
      CIFAR model, kaiming-normal fan-in for torchvision's).
    head_bias_zero: zero classifier bias (torchvision) instead of PyTorch's
      default uniform one.
  """
  block_sizes: Sequence[int]
  num_classes: int
  growth_rate: int = 32
  bn_size: int = 4
  compression: float = 0.5
  cifar_stem: bool = True
  new_channels_first: bool = True
  stem_features: int | None = None
  exits: bool = False
  exit_blocks: Sequence[int] = (1, 2)
  vote_exits: bool = False
  vote_upsample: int | None = None
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  kernel_init: Callable = initializers.torch_default_kernel
  head_bias_zero: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, votes: bool = False) -> ModelOutput:
    layers.check_images(images)
    last_block = len(self.block_sizes) - 1
    if self.exits and any(not 0 <= b < last_block for b in self.exit_blocks):
      raise ValueError(
          f"`exit_blocks` must name blocks followed by a transition (0..{last_block - 1}), "
          f"got {tuple(self.exit_blocks)}.")
    conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=self.kernel_init)
    norm = layers.batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)

    stem_features = self.stem_features or 2 * self.growth_rate
    if self.cifar_stem:
      x = conv(stem_features, 3, name="conv1")(images)
    else:
      x = conv(stem_features, 7, strides=2, name="conv1")(images)
      x = layers.max_pool_3x3_s2(nn.relu(norm(name="bn1")(x)))

    exit_maps = []
    for i, size in enumerate(self.block_sizes):
      for j in range(size):
        x = DenseLayer(self.growth_rate, self.bn_size, conv=conv, norm=norm,
                       new_first=self.new_channels_first,
                       name=f"block{i + 1}_layer{j + 1}")(x)
      if i < last_block:
        x = Transition(int(math.floor(x.shape[-1] * self.compression)), conv=conv, norm=norm,
                       name=f"transition{i + 1}")(x)
        if self.exits and i in self.exit_blocks:
          exit_maps.append(nn.relu(norm(name=f"exit{len(exit_maps) + 1}_bn")(x)))
    x = nn.relu(norm(name="bn_final")(x))
    return linear_heads(x, exit_maps, num_classes=self.num_classes,
                        vote_upsample=self.vote_upsample, votes=votes,
                        vote_exits=self.vote_exits, zero_bias=self.head_bias_zero)


CifarDenseNet121 = functools.partial(DenseNet, block_sizes=(6, 12, 24, 16))
DenseNet121 = functools.partial(
    DenseNet, block_sizes=(6, 12, 24, 16), cifar_stem=False, new_channels_first=False,
    kernel_init=initializers.kaiming_normal_fan_in, head_bias_zero=True)
# For tests: every code path of the two variants, at a fraction of the cost.
CifarDenseNetTiny = functools.partial(DenseNet, block_sizes=(2, 2, 2, 2), growth_rate=8)
DenseNetTiny = functools.partial(
    DenseNet, block_sizes=(1, 1, 1, 1), growth_rate=8, cifar_stem=False, new_channels_first=False,
    kernel_init=initializers.kaiming_normal_fan_in, head_bias_zero=True)
