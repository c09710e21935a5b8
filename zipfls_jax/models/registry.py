"""Model names -> linen Modules: the one way experiments build a model.

Only names listed here exist; options a model does not have are refused
unless they keep their neutral default, so one config can set
`zero_init_residual=False` or `exits=False` (with any `exit_type`) for any
model. The registry
builds Modules and nothing else (no parameters, no data).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

from flax import linen as nn

from zipfls_jax.models import cifar_resnet, densenet, mobilenet_v2, resnet
from zipfls_jax.models import exits as exits_lib
from zipfls_jax.models.heads import check_vote_upsample

_BOTH = ("linear", "bottleneck")
_LINEAR = ("linear",)
_BOTTLENECK = ("bottleneck",)
# name -> (constructor, the kinds of intermediate exit it has: the Zipf
# authors' 'linear' exits of docs/method.md section 5, BYOT's 'bottleneck'
# exits of `zipfls_jax.models.exits`).
_MODELS: Dict[str, Tuple[Callable[..., nn.Module], Tuple[str, ...]]] = {
    "cifar_resnet18": (cifar_resnet.CifarResNet18, _BOTH),
    "cifar_resnet34": (cifar_resnet.CifarResNet34, _BOTH),
    "cifar_densenet121": (densenet.CifarDenseNet121, _LINEAR),
    "resnet18": (resnet.ResNet18, _BOTTLENECK),
    "resnet34": (resnet.ResNet34, _BOTTLENECK),
    "resnet50": (resnet.ResNet50, _BOTTLENECK),
    "resnet101": (resnet.ResNet101, _BOTTLENECK),
    "resnext50_32x4d": (resnet.ResNeXt50_32x4d, _BOTTLENECK),
    "resnext101_32x8d": (resnet.ResNeXt101_32x8d, _BOTTLENECK),
    "densenet121": (densenet.DenseNet121, ()),
    "mobilenet_v2": (mobilenet_v2.MobileNetV2, ()),
    # Tiny variants for tests and smoke runs.
    "cifar_resnet_tiny": (cifar_resnet.CifarResNetTiny, _BOTH),
    "cifar_densenet_tiny": (densenet.CifarDenseNetTiny, _LINEAR),
    "resnet_tiny": (resnet.ResNetTiny, _BOTTLENECK),
    "resnext_tiny": (resnet.ResNeXtTiny, _BOTTLENECK),
    "densenet_tiny": (densenet.DenseNetTiny, ()),
    "mobilenet_v2_tiny": (mobilenet_v2.MobileNetV2Tiny, ()),
}

# Options every name accepts at these values, whether or not the model has them.
_NEUTRAL_OPTIONS = {"vote_exits": False, "zero_init_residual": False}

MODEL_NAMES = tuple(_MODELS)


def get_model(name: str,
              *,
              num_classes: int,
              exits: bool = False,
              exit_type: str = "linear",
              **kwargs) -> nn.Module:
  """Builds the named model.

  Args:
    name: one of `MODEL_NAMES`.
    num_classes: C, an int >= 2.
    exits: add intermediate exits, for training; the model without them is
      the same model with the same parameters.
    exit_type: the kind of exit (read only with `exits`): 'linear', the Zipf
      authors' exits of docs/method.md section 5 (`cifar_resnet*`,
      `cifar_densenet*`), or 'bottleneck', BYOT's exits after stages 1-3
      (`cifar_resnet*`, `resnet*`, `resnext*`), which also return
      `exit_features`. DenseNets and MobileNetV2 have no bottleneck exits.
    **kwargs: fields of the model class, e.g. `dtype` (compute dtype;
      parameters stay float32), `bn_axis_name`, `vote_upsample` (None or 2),
      `vote_exits` (linear exits only), `exit_stages`, `zero_init_residual`,
      `dropout_rate` (MobileNetV2).

  Returns:
    A linen Module: `model.init(rng, images, train=False)` gives
    {'params', 'batch_stats'}; `model.apply(variables, images, train=...,
    votes=...)` gives a `ModelOutput`.
  """
  if name not in _MODELS:
    raise ValueError(f"Unknown model name {name!r}; expected one of {', '.join(MODEL_NAMES)}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
    raise ValueError(f"`num_classes` must be an int >= 2, got {num_classes!r}.")
  constructor, exit_types = _MODELS[name]
  with_type = ", ".join(n for n, (_, types) in _MODELS.items() if exit_type in types)
  exits_lib.check_exit_options(
      repr(name), exits=exits, exit_type=exit_type, vote_exits=bool(kwargs.get("vote_exits")),
      exit_types=exit_types, available=f"; {exit_type} exits exist for {with_type}")
  check_vote_upsample(kwargs.get("vote_upsample"))
  if kwargs.get("vote_exits") and not exits:
    raise ValueError("`vote_exits=True` needs `exits=True`: there are no exit heads to vote.")

  fields = {f.name for f in dataclasses.fields(getattr(constructor, "func", constructor))}
  if exit_types:
    kwargs["exits"] = exits
  if exits and "exit_type" in fields:
    kwargs["exit_type"] = exit_type
  for option, neutral in _NEUTRAL_OPTIONS.items():
    if option in kwargs and option not in fields:
      if kwargs[option] != neutral:
        raise ValueError(f"`{option}={kwargs[option]!r}`: model {name!r} has no such option.")
      del kwargs[option]
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise TypeError(f"Model {name!r} got unknown options {unknown}; it accepts {sorted(fields)}.")
  return constructor(num_classes=num_classes, **kwargs)
