"""Model names -> linen Modules: the one way experiments build a model.

Only names listed here exist; options a model does not have are refused
unless they keep their neutral default, so one config can set
`zero_init_residual=False` or `exits=False` for any model. The registry
builds Modules and nothing else (no parameters, no data).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

from flax import linen as nn

from zipfls_jax.models import cifar_resnet, densenet, mobilenet_v2, resnet
from zipfls_jax.models.heads import check_vote_upsample

# name -> (constructor, has intermediate exits of docs/method.md section 5)
_MODELS: Dict[str, Tuple[Callable[..., nn.Module], bool]] = {
    "cifar_resnet18": (cifar_resnet.CifarResNet18, True),
    "cifar_resnet34": (cifar_resnet.CifarResNet34, True),
    "cifar_densenet121": (densenet.CifarDenseNet121, True),
    "resnet18": (resnet.ResNet18, False),
    "resnet34": (resnet.ResNet34, False),
    "resnet50": (resnet.ResNet50, False),
    "resnet101": (resnet.ResNet101, False),
    "resnext50_32x4d": (resnet.ResNeXt50_32x4d, False),
    "resnext101_32x8d": (resnet.ResNeXt101_32x8d, False),
    "densenet121": (densenet.DenseNet121, False),
    "mobilenet_v2": (mobilenet_v2.MobileNetV2, False),
    # Tiny variants for tests and smoke runs.
    "cifar_resnet_tiny": (cifar_resnet.CifarResNetTiny, True),
    "cifar_densenet_tiny": (densenet.CifarDenseNetTiny, True),
    "resnet_tiny": (resnet.ResNetTiny, False),
    "resnext_tiny": (resnet.ResNeXtTiny, False),
    "densenet_tiny": (densenet.DenseNetTiny, False),
    "mobilenet_v2_tiny": (mobilenet_v2.MobileNetV2Tiny, False),
}

# Options every name accepts at these values, whether or not the model has them.
_NEUTRAL_OPTIONS = {"vote_exits": False, "zero_init_residual": False}

MODEL_NAMES = tuple(_MODELS)


def get_model(name: str, *, num_classes: int, exits: bool = False, **kwargs) -> nn.Module:
  """Builds the named model.

  Args:
    name: one of `MODEL_NAMES`.
    num_classes: C, an int >= 2.
    exits: add the intermediate heads of docs/method.md section 5 (CIFAR models only).
    **kwargs: fields of the model class, e.g. `dtype` (compute dtype;
      parameters stay float32), `bn_axis_name`, `vote_upsample` (None or 2),
      `vote_exits`, `zero_init_residual`, `dropout_rate` (MobileNetV2).

  Returns:
    A linen Module: `model.init(rng, images, train=False)` gives
    {'params', 'batch_stats'}; `model.apply(variables, images, train=...,
    votes=...)` gives a `ModelOutput`.
  """
  if name not in _MODELS:
    raise ValueError(f"Unknown model name {name!r}; expected one of {', '.join(MODEL_NAMES)}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
  constructor, has_exits = _MODELS[name]
  if exits and not has_exits:
    exit_models = ", ".join(n for n, (_, e) in _MODELS.items() if e)
    raise ValueError(
        f"`exits=True`: {name!r} has no intermediate exits (the authors define them for {exit_models}).")
  check_vote_upsample(kwargs.get("vote_upsample"))
  if kwargs.get("vote_exits") and not exits:
    raise ValueError("`vote_exits=True` needs `exits=True`: there are no exit heads to vote.")

  fields = {f.name for f in dataclasses.fields(getattr(constructor, "func", constructor))}
  if has_exits:
    kwargs["exits"] = exits
  for option, neutral in _NEUTRAL_OPTIONS.items():
    if option in kwargs and option not in fields:
      if kwargs[option] != neutral:
        raise ValueError(f"`{option}={kwargs[option]!r}`: model {name!r} has no such option.")
      del kwargs[option]
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise TypeError(f"Model {name!r} got unknown options {unknown}; it accepts {sorted(fields)}.")
  return constructor(num_classes=num_classes, **kwargs)
