"""Intermediate exits: their two kinds, where they sit, and BYOT's bottleneck.

An exit is a classifier on an intermediate stage, trained with the network
and dropped at inference. Two kinds exist:

* `'linear'`, the Zipf authors' multi-exit variant (docs/method.md
  section 5): the stage's map is pooled and classified by its own linear
  head, which can also vote.
* `'bottleneck'`, Be Your Own Teacher's (BYOT, Zhang et al., ICCV 2019):
  a bottleneck first brings the stage's map to the final map's shape
  (channels and spatial size), then a linear head pools and classifies it.
  The pooled bottleneck output is the exit's feature, which BYOT's feature
  term compares with the final pooled features, so both have one width.

The bottleneck follows the first author's code
(ArchipLab-LinfengZhang/pytorch-self-distillation-final, its `scala`
modules): one separable-convolution block per remaining stage, each
halving the side and taking the next stage's width, so the exit on
0-based stage s of an n-stage network has n - 1 - s blocks. A block is depthwise 3x3 (stride
2) - pointwise 1x1 (same width) - BN - ReLU - depthwise 3x3 - pointwise 1x1
(next width) - BN - ReLU, convolutions without bias, kaiming-normal
(fan-out) initialised like that code's; the classifier is a PyTorch-default
linear layer. Deliberately not followed: that code's attention modules (a
sigmoid mask multiplied into the map before the bottleneck), the learned
linear adaptation of the exit features before the feature term, and its
fixed 4x4 average pool, which is a global pool only on 32x32 inputs (a
global average pool here, for every input size).

Exits only add modules (`exit{k}_bottleneck`, `exit{k}_head`, shallowest
exit k = 1): the backbone, the final head and their initial values do not
depend on them, so `without_exits(variables)` are the variables of the same
model built without exits. Architecture only; BYOT's loss lives in
`zipfls_jax.self_distillation`.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import jax
from flax import linen as nn

from zipfls_jax.models import initializers, layers
from zipfls_jax.models.heads import linear_heads
from zipfls_jax.models.outputs import ModelOutput

EXIT_TYPES = ("linear", "bottleneck")
# The Zipf authors' linear exits read the 2nd and 3rd stages.
LINEAR_EXIT_STAGES = (1, 2)

_EXIT_MODULE = re.compile(r"exit\d+_")


def check_exit_options(model_name: str,
                       *,
                       exits: bool,
                       exit_type: str,
                       vote_exits: bool,
                       exit_types: Sequence[str],
                       available: str = "") -> None:
  """Raises ValueError for an exit configuration `model_name` cannot build.

  Args:
    model_name: the model, for the message.
    exits: whether exits are asked for.
    exit_type: 'linear' or 'bottleneck'; checked even without exits.
    vote_exits: whether the exits should vote.
    exit_types: the kinds of exit the model has.
    available: appended to the message when the model lacks the kind (e.g.
      which models have it).
  """
  if exit_type not in EXIT_TYPES:
    raise ValueError(
        f"`exit_type` must be one of {', '.join(map(repr, EXIT_TYPES))}, got {exit_type!r}.")
  if exits and exit_type not in exit_types:
    has = (f"it has exit_type={exit_types[0]!r} only" if len(exit_types) == 1
           else "it has none")
    raise ValueError(f"`exits=True, exit_type={exit_type!r}`: {model_name} has no {exit_type} "
                     f"exits ({has}){available}.")
  if vote_exits and exits and exit_type == "bottleneck":
    raise ValueError(
        "`vote_exits=True` needs exit_type='linear': bottleneck exits (BYOT's) do not vote; "
        "their classifiers read the bottleneck's output, not a stage's map.")


def exit_stages_for(exit_stages: Optional[Sequence[int]], *, exit_type: str,
                    num_stages: int) -> Tuple[int, ...]:
  """The 0-based stages that feed an exit, shallowest first, without repeats.

  Args:
    exit_stages: the stages asked for, or None for the kind's own: the Zipf
      authors' (1, 2) for linear exits, every stage but the last (BYOT's
      stages 1-3 of 4) for bottleneck exits.
    exit_type: 'linear' or 'bottleneck'.
    num_stages: the network's stage count.

  Raises:
    ValueError: for a stage out of range; the last stage cannot feed a
      bottleneck exit (its map already is the final one).
  """
  if exit_stages is None:
    return LINEAR_EXIT_STAGES if exit_type == "linear" else tuple(range(num_stages - 1))
  last = num_stages - 1 if exit_type == "linear" else num_stages - 2
  stages = tuple(exit_stages)
  if any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= last for s in stages):
    why = "" if exit_type == "linear" else " (the last stage's map is the final one)"
    raise ValueError(f"`exit_stages` must name stages 0..{last} for {exit_type} exits{why}, "
                     f"got {stages}.")
  return tuple(sorted(set(stages)))


class SeparableConvBlock(nn.Module):
  """BYOT's downsampling block: twice depthwise 3x3 - pointwise 1x1 - BN - ReLU.

  The first depthwise convolution has stride 2 and the first pointwise one
  keeps the input's width; the second pointwise one maps to `features`.

  Attributes:
    features: output channels.
    conv: `layers.conv`-like factory (bias-free, PyTorch padding).
    norm: BatchNorm factory.
  """
  features: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    x = self.conv(width, 3, strides=2, groups=width, name="depthwise1")(x)
    x = nn.relu(self.norm(name="bn1")(self.conv(width, 1, name="pointwise1")(x)))
    x = self.conv(width, 3, groups=width, name="depthwise2")(x)
    return nn.relu(self.norm(name="bn2")(self.conv(self.features, 1, name="pointwise2")(x)))


class ExitBottleneck(nn.Module):
  """A chain of `SeparableConvBlock`s, one per entry of `widths`."""
  widths: Sequence[int]
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    for k, width in enumerate(self.widths):
      x = SeparableConvBlock(width, conv=self.conv, norm=self.norm, name=f"block{k + 1}")(x)
    return x


def bottleneck_heads(final_map: jax.Array,
                     stage_maps: Sequence[Tuple[int, jax.Array]],
                     *,
                     stage_widths: Sequence[int],
                     num_classes: int,
                     vote_upsample: Optional[int],
                     votes: bool,
                     norm: Callable[..., nn.Module],
                     dtype: Any) -> ModelOutput:
  """The final head, and one bottleneck exit per (stage, map) of `stage_maps`.

  Call it inside a model's compact `__call__` in place of `linear_heads`:
  exit k (shallowest first) becomes the submodules 'exit{k}_bottleneck'
  and 'exit{k}_head'. A stage-s map goes through one block per later stage,
  taking that stage's width from `stage_widths`, so it leaves with the final
  map's shape. Exits never vote.

  Returns:
    The final head's `ModelOutput` with `exit_logits` and `exit_features`
    (the pooled bottleneck outputs, (N, D) as the final `features`).
  """
  conv = functools.partial(layers.conv, dtype=dtype,
                           kernel_init=initializers.kaiming_normal_fan_out)
  maps = [ExitBottleneck(tuple(stage_widths[s + 1:]), conv=conv, norm=norm,
                     name=f"exit{k + 1}_bottleneck")(m)
          for k, (s, m) in enumerate(stage_maps)]
  return linear_heads(final_map, maps, num_classes=num_classes, vote_upsample=vote_upsample,
                      votes=votes, exit_features=True)


def without_exits(variables: Mapping[str, Any]) -> dict:
  """`variables` without the exits' modules: those of the model built without exits.

  Drops every top-level 'exit{k}_...' module (heads, bottlenecks, the
  DenseNet exits' BNs) from each collection, for inference or export after
  training with exits.
  """
  return {collection: {name: value for name, value in tree.items()
                       if not _EXIT_MODULE.match(name)}
          for collection, tree in variables.items()}
