"""PyTorch state-dict names and shapes, written down from the reference source.

Each function lists, in PyTorch's own names and layouts (conv OIHW, linear
(out, in)), every entry of the `state_dict()` of one architecture, following
the constructors of torchvision (`torchvision/models/resnet.py`,
`densenet.py`, `mobilenetv2.py`) and of the authors' `cifar_models`
(`resnet.py`: `CIFAR_ResNet` with `PreActBlock`; `densenet3.py`:
`CIFAR_DenseNet` with `Bottleneck`, `Transition`). Nothing here imports
zipfls_jax: the tables are independent of our models. The width arguments
(`base`, `widths`) only scale the same layouts down to the tiny test
variants; with their defaults the tables are the published models, and
`parameter_count` reproduces the published counts.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

Shapes = Dict[str, Tuple[int, ...]]


def _conv(sd: Shapes, name: str, out: int, inp: int, k: int) -> None:
  sd[f"{name}.weight"] = (out, inp, k, k)


def _bn(sd: Shapes, name: str, c: int) -> None:
  for leaf in ("weight", "bias", "running_mean", "running_var"):
    sd[f"{name}.{leaf}"] = (c,)
  sd[f"{name}.num_batches_tracked"] = ()


def _linear(sd: Shapes, name: str, out: int, inp: int) -> None:
  sd[f"{name}.weight"] = (out, inp)
  sd[f"{name}.bias"] = (out,)


def parameter_count(sd: Shapes) -> int:
  """PyTorch's `sum(p.numel() for p in model.parameters())`: no buffers."""
  total = 0
  for key, shape in sd.items():
    if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
      continue
    size = 1
    for d in shape:
      size *= d
    total += size
  return total


def torchvision_resnet(layers: Sequence[int], *, bottleneck: bool, num_classes: int,
                       groups: int = 1, width_per_group: int = 64, base: int = 64) -> Shapes:
  """torchvision `ResNet(block, layers, num_classes, groups, width_per_group)`."""
  sd: Shapes = {}
  _conv(sd, "conv1", base, 3, 7)
  _bn(sd, "bn1", base)
  expansion = 4 if bottleneck else 1
  inplanes = base
  for i, blocks in enumerate(layers):
    planes = base * 2 ** i
    stride = 1 if i == 0 else 2
    for j in range(blocks):
      p = f"layer{i + 1}.{j}"
      if bottleneck:
        width = int(planes * (width_per_group / 64.0)) * groups
        _conv(sd, f"{p}.conv1", width, inplanes, 1)
        _bn(sd, f"{p}.bn1", width)
        _conv(sd, f"{p}.conv2", width, width // groups, 3)
        _bn(sd, f"{p}.bn2", width)
        _conv(sd, f"{p}.conv3", planes * expansion, width, 1)
        _bn(sd, f"{p}.bn3", planes * expansion)
      else:
        _conv(sd, f"{p}.conv1", planes, inplanes, 3)
        _bn(sd, f"{p}.bn1", planes)
        _conv(sd, f"{p}.conv2", planes, planes, 3)
        _bn(sd, f"{p}.bn2", planes)
      if j == 0 and (stride != 1 or inplanes != planes * expansion):
        _conv(sd, f"{p}.downsample.0", planes * expansion, inplanes, 1)
        _bn(sd, f"{p}.downsample.1", planes * expansion)
      inplanes = planes * expansion
  _linear(sd, "fc", num_classes, inplanes)
  return sd


def torchvision_densenet(block_config: Sequence[int], *, num_classes: int, growth_rate: int = 32,
                         num_init_features: int = 64, bn_size: int = 4) -> Shapes:
  """torchvision `DenseNet(growth_rate, block_config, num_init_features)`."""
  sd: Shapes = {}
  _conv(sd, "features.conv0", num_init_features, 3, 7)
  _bn(sd, "features.norm0", num_init_features)
  features = num_init_features
  for i, num_layers in enumerate(block_config):
    for j in range(num_layers):
      p = f"features.denseblock{i + 1}.denselayer{j + 1}"
      inp = features + j * growth_rate
      _bn(sd, f"{p}.norm1", inp)
      _conv(sd, f"{p}.conv1", bn_size * growth_rate, inp, 1)
      _bn(sd, f"{p}.norm2", bn_size * growth_rate)
      _conv(sd, f"{p}.conv2", growth_rate, bn_size * growth_rate, 3)
    features += num_layers * growth_rate
    if i != len(block_config) - 1:
      _bn(sd, f"features.transition{i + 1}.norm", features)
      _conv(sd, f"features.transition{i + 1}.conv", features // 2, features, 1)
      features //= 2
  _bn(sd, "features.norm5", features)
  _linear(sd, "classifier", num_classes, features)
  return sd


def _make_divisible(v: float, divisor: int) -> int:
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  if new_v < 0.9 * v:
    new_v += divisor
  return new_v


MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def torchvision_mobilenet_v2(*, num_classes: int, width_mult: float = 1.0,
                             setting=MOBILENET_V2_SETTING, last_channel: int = 1280) -> Shapes:
  """torchvision `MobileNetV2(num_classes, width_mult, inverted_residual_setting)`."""
  sd: Shapes = {}
  inp = _make_divisible(32 * width_mult, 8)
  last = _make_divisible(last_channel * max(1.0, width_mult), 8)
  _conv(sd, "features.0.0", inp, 3, 3)   # ConvNormActivation: (conv, bn, relu6)
  _bn(sd, "features.0.1", inp)
  index = 1
  for t, c, n, _ in setting:
    out = _make_divisible(c * width_mult, 8)
    for _ in range(n):
      p = f"features.{index}.conv"
      hidden = int(round(inp * t))
      k = 0
      if t != 1:
        _conv(sd, f"{p}.0.0", hidden, inp, 1)
        _bn(sd, f"{p}.0.1", hidden)
        k = 1
      sd[f"{p}.{k}.0.weight"] = (hidden, 1, 3, 3)   # depthwise: groups = hidden
      _bn(sd, f"{p}.{k}.1", hidden)
      _conv(sd, f"{p}.{k + 1}", out, hidden, 1)
      _bn(sd, f"{p}.{k + 2}", out)
      inp = out
      index += 1
  _conv(sd, f"features.{index}.0", last, inp, 1)
  _bn(sd, f"features.{index}.1", last)
  _linear(sd, "classifier.1", num_classes, last)   # classifier.0 is the dropout
  return sd


def authors_cifar_resnet(num_blocks: Sequence[int], *, num_classes: int,
                         widths: Sequence[int] = (64, 128, 256, 512)) -> Shapes:
  """The authors' `CIFAR_ResNet(PreActBlock, num_blocks, num_classes)`.

  Their model always builds the exit heads `linear2` (on layer2's output) and
  `linear3` (on layer3's), whether a run uses them or not.
  """
  sd: Shapes = {}
  _conv(sd, "conv1", widths[0], 3, 3)
  _bn(sd, "bn1", widths[0])
  in_planes = widths[0]
  for i, (blocks, planes) in enumerate(zip(num_blocks, widths)):
    for j in range(blocks):
      stride = (1 if i == 0 else 2) if j == 0 else 1
      p = f"layer{i + 1}.{j}"
      _bn(sd, f"{p}.bn1", in_planes)
      _conv(sd, f"{p}.conv1", planes, in_planes, 3)
      _bn(sd, f"{p}.bn2", planes)
      _conv(sd, f"{p}.conv2", planes, planes, 3)
      if stride != 1 or in_planes != planes:
        _conv(sd, f"{p}.shortcut.0", planes, in_planes, 1)
      in_planes = planes
  _linear(sd, "linear", num_classes, widths[3])
  _linear(sd, "linear3", num_classes, widths[2])
  _linear(sd, "linear2", num_classes, widths[1])
  return sd


def authors_cifar_densenet(nblocks: Sequence[int], *, num_classes: int, growth_rate: int = 32,
                           reduction: float = 0.5) -> Shapes:
  """The authors' `CIFAR_DenseNet(Bottleneck, nblocks, growth_rate, num_classes)`.

  It always builds both exits: `bn2`/`linear2` on trans2's output and
  `bn3`/`linear3` on trans3's.
  """
  sd: Shapes = {}
  planes = 2 * growth_rate
  _conv(sd, "conv1", planes, 3, 3)
  exit_planes = {}
  for i, n in enumerate(nblocks):
    for j in range(n):
      p = f"dense{i + 1}.{j}"
      _bn(sd, f"{p}.bn1", planes + j * growth_rate)
      _conv(sd, f"{p}.conv1", 4 * growth_rate, planes + j * growth_rate, 1)
      _bn(sd, f"{p}.bn2", 4 * growth_rate)
      _conv(sd, f"{p}.conv2", growth_rate, 4 * growth_rate, 3)
    planes += n * growth_rate
    if i < 3:
      out = int(planes * reduction)   # math.floor of a positive number
      _bn(sd, f"trans{i + 1}.bn", planes)
      _conv(sd, f"trans{i + 1}.conv", out, planes, 1)
      planes = out
      exit_planes[i + 1] = planes
  _bn(sd, "bn", planes)
  _linear(sd, "linear", num_classes, planes)
  _linear(sd, "linear2", num_classes, exit_planes[2])
  _bn(sd, "bn2", exit_planes[2])
  _linear(sd, "linear3", num_classes, exit_planes[3])
  _bn(sd, "bn3", exit_planes[3])
  return sd


def without(sd: Shapes, *modules: str) -> Shapes:
  """`sd` without the entries of the named top-level modules."""
  return {k: v for k, v in sd.items() if k.split(".")[0] not in modules}
