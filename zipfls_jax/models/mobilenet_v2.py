"""torchvision's MobileNetV2, with a voting head.

docs/method.md section 5: inverted residual blocks (1x1 expand-BN-ReLU6, 3x3 depthwise-
BN-ReLU6, 1x1 project-BN, identity shortcut when shapes match), a 1x1 conv to
1280 channels, global average pool, dropout 0.2 and one linear classifier,
which also votes on the final 7x7 map (the authors' code voted with a fresh,
untrained layer instead: docs/method.md section 8, not copied). torchvision's initialisers.
Training with `dropout_rate > 0` needs `rngs={'dropout': key}` in `apply`.
Architecture only.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from zipfls_jax.models import initializers, layers
from zipfls_jax.models.heads import VotingHead
from zipfls_jax.models.outputs import ModelOutput

# (expansion t, output channels c, repeats n, first stride s), torchvision's table.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int) -> int:
  """torchvision's `_make_divisible`: round to a multiple, never down by >10%."""
  new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:
    new_value += divisor
  return new_value


class InvertedResidual(nn.Module):
  """[1x1 expand-BN-ReLU6,] 3x3 depthwise-BN-ReLU6, 1x1 project-BN, [+ x]."""
  features: int
  strides: int
  expand_ratio: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    in_features = x.shape[-1]
    hidden = int(round(in_features * self.expand_ratio))
    y = x
    if self.expand_ratio != 1:
      y = nn.relu6(self.norm(name="expand_bn")(self.conv(hidden, 1, name="expand_conv")(y)))
    y = self.conv(hidden, 3, strides=self.strides, groups=hidden, name="depthwise_conv")(y)
    y = nn.relu6(self.norm(name="depthwise_bn")(y))
    y = self.norm(name="project_bn")(self.conv(self.features, 1, name="project_conv")(y))
    if self.strides == 1 and in_features == self.features:
      return x + y
    return y


class MobileNetV2(nn.Module):
  """MobileNetV2 (torchvision layout) with a voting head.

  Attributes:
    num_classes: C.
    width_multiplier: channel multiplier (torchvision's `width_mult`).
    setting: (t, c, n, s) rows of inverted residual stages.
    stem_features, last_features: stem and final 1x1 conv widths (before the
      multiplier; the final width never shrinks below `last_features`).
    dropout_rate: dropout before the classifier (torchvision: 0.2).
    round_nearest: channel rounding.
    vote_upsample, dtype, bn_axis_name: as `CifarResNet`.
  """
  num_classes: int
  width_multiplier: float = 1.0
  setting: Sequence[Tuple[int, int, int, int]] = INVERTED_RESIDUAL_SETTING
  stem_features: int = 32
  last_features: int = 1280
  dropout_rate: float = 0.2
  round_nearest: int = 8
  vote_upsample: int | None = None
  dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, votes: bool = False) -> ModelOutput:
    layers.check_images(images)
    conv = functools.partial(layers.conv, dtype=self.dtype, kernel_init=initializers.kaiming_normal_fan_out)
    norm = layers.batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name)

    def channels(c):
      return make_divisible(c * self.width_multiplier, self.round_nearest)

    x = conv(channels(self.stem_features), 3, strides=2, name="stem_conv")(images)
    x = nn.relu6(norm(name="stem_bn")(x))
    for i, (t, c, n, s) in enumerate(self.setting):
      for j in range(n):
        x = InvertedResidual(channels(c), strides=s if j == 0 else 1, expand_ratio=t,
                             conv=conv, norm=norm, name=f"stage{i + 1}_block{j + 1}")(x)
    last = make_divisible(self.last_features * max(1.0, self.width_multiplier), self.round_nearest)
    x = nn.relu6(norm(name="last_bn")(conv(last, 1, name="last_conv")(x)))
    return VotingHead(
        self.num_classes,
        vote_upsample=self.vote_upsample,
        dropout_rate=self.dropout_rate,
        kernel_init=nn.initializers.normal(0.01),
        bias_init=nn.initializers.zeros,
        name="head")(x, votes=votes, deterministic=not train)


# For tests: expansion, depthwise stride and identity paths, at small widths.
MobileNetV2Tiny = functools.partial(
    MobileNetV2, width_multiplier=0.25, setting=((1, 16, 1, 1), (6, 24, 2, 2)),
    last_features=32, dropout_rate=0.0)
