"""PyTorch weights into our models: torchvision's and the authors' state dicts.

`load_pytorch_weights` turns a PyTorch `state_dict` into the
{'params', 'batch_stats'} of any model of the registry, exits included;
`merge_pytorch_weights` does the same for fine-tuning, keeping freshly
initialised heads when the class count differs. Names follow torchvision for
the ImageNet-style models (`resnet*`, `resnext*`, `densenet121`,
`mobilenet_v2`) and the authors' `cifar_models` for the CIFAR ones
(`CIFAR_ResNet*`, `CIFAR_DenseNet121`), for the tiny variants as for the
full-size ones. Layouts: convolution kernels OIHW -> HWIO, linear weights
(out, in) -> (in, out), BatchNorm weight / bias / running_mean /
running_var -> scale / bias / mean / var.

A state dict is a mapping of names to arrays (NumPy arrays, or anything
`np.asarray` takes), so torch is not needed; files are read by
`read_pytorch_weights`. BYOT's bottleneck exits (`exit_type='bottleneck'`)
have no PyTorch counterpart in these families: `load_pytorch_weights`
refuses a model with them, and `merge_pytorch_weights` keeps them as
initialised. The expected names and shapes come from the model's
own variables (`jax.eval_shape`, no arrays), so this module holds one naming
rule per architecture family and nothing that computes.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from zipfls_jax.models import cifar_resnet, densenet, mobilenet_v2, registry, resnet
from zipfls_jax.models import exits as exits_lib

StateDict = Mapping[str, Any]
Weights = Union[StateDict, str, os.PathLike]

# Keys PyTorch keeps that hold no weights.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# torchvision's old DenseNet checkpoints (the published ImageNet ones among
# them) name a dense layer's modules 'norm.1', 'conv.2', ...; torchvision
# renames them on load, and so does this module.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")


# --- Naming rules: our module path -> the PyTorch module name ---------------
# Each returns the torch prefix of one of our modules (a tuple of names from
# the variables' tree), or raises KeyError for a module it does not know.

def _torchvision_resnet_name(model: resnet.ResNet, path: Tuple[str, ...]) -> str:
  del model
  if path in (("conv1",), ("bn1",)):
    return path[0]
  if path == ("head",):
    return "fc"
  stage, block = _stage_block(path[0])
  sub = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(path[1], path[1])
  return f"layer{stage}.{block - 1}.{sub}"


def _authors_cifar_resnet_name(model: cifar_resnet.CifarResNet, path: Tuple[str, ...]) -> str:
  if path in (("conv1",), ("bn1",)):
    return path[0]
  if path == ("head",):
    return "linear"
  exit_match = re.fullmatch(r"exit(\d+)_head", path[0])
  if exit_match:
    # The authors name an exit by the 1-based stage it reads: linear2, linear3.
    stages = exits_lib.exit_stages_for(model.exit_stages, exit_type=model.exit_type,
                                       num_stages=len(model.stage_sizes))
    return f"linear{stages[int(exit_match[1]) - 1] + 1}"
  stage, block = _stage_block(path[0])
  sub = "shortcut.0" if path[1] == "shortcut" else path[1]
  return f"layer{stage}.{block - 1}.{sub}"


def _densenet_name(model: densenet.DenseNet, path: Tuple[str, ...]) -> str:
  if model.cifar_stem:
    return _authors_cifar_densenet_name(model, path)
  return _torchvision_densenet_name(path)


def _authors_cifar_densenet_name(model: densenet.DenseNet, path: Tuple[str, ...]) -> str:
  fixed = {("conv1",): "conv1", ("bn_final",): "bn", ("head",): "linear"}
  if path in fixed:
    return fixed[path]
  exit_match = re.fullmatch(r"exit(\d+)_(bn|head)", path[0])
  if exit_match:
    # Exit k reads transition t = block + 1: the authors' bn{t} and linear{t}.
    block = _exit_positions(model.exit_blocks, len(model.block_sizes) - 1)[int(exit_match[1]) - 1]
    return f"{'bn' if exit_match[2] == 'bn' else 'linear'}{block + 1}"
  layer = re.fullmatch(r"block(\d+)_layer(\d+)", path[0])
  if layer:
    return f"dense{layer[1]}.{int(layer[2]) - 1}.{path[1]}"
  transition = re.fullmatch(r"transition(\d+)", path[0])
  if transition:
    return f"trans{transition[1]}.{path[1]}"
  raise KeyError(path)


def _torchvision_densenet_name(path: Tuple[str, ...]) -> str:
  fixed = {("conv1",): "features.conv0", ("bn1",): "features.norm0",
           ("bn_final",): "features.norm5", ("head",): "classifier"}
  if path in fixed:
    return fixed[path]
  layer = re.fullmatch(r"block(\d+)_layer(\d+)", path[0])
  if layer:
    sub = {"bn1": "norm1", "bn2": "norm2"}.get(path[1], path[1])
    return f"features.denseblock{layer[1]}.denselayer{layer[2]}.{sub}"
  transition = re.fullmatch(r"transition(\d+)", path[0])
  if transition:
    sub = {"bn": "norm"}.get(path[1], path[1])
    return f"features.transition{transition[1]}.{sub}"
  raise KeyError(path)


def _torchvision_mobilenet_v2_name(model: mobilenet_v2.MobileNetV2, path: Tuple[str, ...]) -> str:
  # features.0 is the stem, features.1..B the blocks in order, features.B+1 the
  # last 1x1 conv; each of the three is Sequential(conv, bn, relu6).
  num_blocks = sum(n for _, _, n, _ in model.setting)
  fixed = {("stem_conv",): "features.0.0", ("stem_bn",): "features.0.1",
           ("last_conv",): f"features.{num_blocks + 1}.0",
           ("last_bn",): f"features.{num_blocks + 1}.1", ("head",): "classifier.1"}
  if path in fixed:
    return fixed[path]
  stage, block = _stage_block(path[0])
  index = 1 + sum(n for _, _, n, _ in model.setting[:stage - 1]) + block - 1
  expands = model.setting[stage - 1][0] != 1
  # InvertedResidual.conv: [expand (conv, bn, relu6),] depthwise (conv, bn,
  # relu6), project conv, project bn.
  subs = ["expand_conv", "expand_bn"] if expands else []
  subs += ["depthwise_conv", "depthwise_bn", "project_conv", "project_bn"]
  torch_subs = (["0.0", "0.1", "1.0", "1.1", "2", "3"] if expands else ["0.0", "0.1", "1", "2"])
  return f"features.{index}.conv.{dict(zip(subs, torch_subs))[path[1]]}"


def _stage_block(name: str) -> Tuple[int, int]:
  match = re.fullmatch(r"stage(\d+)_block(\d+)", name)
  if not match:
    raise KeyError(name)
  return int(match[1]), int(match[2])


def _exit_positions(chosen: Sequence[int], count: int) -> List[int]:
  """The 0-based positions with an exit, shallowest first, as the models build them."""
  return [i for i in range(count) if i in chosen]


def _has_bottleneck_exits(model: nn.Module) -> bool:
  return bool(getattr(model, "exits", False)) and getattr(model, "exit_type", None) == "bottleneck"


def _is_fresh_module(model: nn.Module, path: Tuple[str, ...]) -> bool:
  """Whether our module `path` has no PyTorch counterpart: a BYOT bottleneck exit's."""
  return (_has_bottleneck_exits(model)
          and re.fullmatch(r"exit\d+_(bottleneck|head)", path[0]) is not None)


# Model class -> (naming rule, names of heads the authors' or torchvision's
# checkpoints may hold that a model without them skips).
def _family(model: nn.Module) -> Tuple[Callable[[Tuple[str, ...]], str], Tuple[str, ...]]:
  if isinstance(model, cifar_resnet.CifarResNet):
    # The authors' CIFAR_ResNet always builds both exit heads, used or not.
    return (lambda path: _authors_cifar_resnet_name(model, path)), ("linear2", "linear3")
  if isinstance(model, densenet.DenseNet) and model.cifar_stem:
    # Their CIFAR_DenseNet always builds both exits (a BN and a linear each).
    return (lambda path: _densenet_name(model, path)), ("bn2", "bn3", "linear2", "linear3")
  if isinstance(model, resnet.ResNet):
    # The authors' ImageNet / iNat runs add exit heads to torchvision's ResNets.
    return (lambda path: _torchvision_resnet_name(model, path)), ("linear2", "linear3")
  if isinstance(model, densenet.DenseNet):
    # ... and a separate (never trained) voting layer to DenseNet121 / MobileNetV2.
    return (lambda path: _densenet_name(model, path)), ("linear",)
  if isinstance(model, mobilenet_v2.MobileNetV2):
    return (lambda path: _torchvision_mobilenet_v2_name(model, path)), ("linear",)
  raise TypeError(
      f"No PyTorch naming rule for {type(model).__name__}; expected a model of "
      f"zipfls_jax.models.get_model ({', '.join(registry.MODEL_NAMES)}).")


# --- One expected entry per leaf of our variables ---------------------------

@dataclasses.dataclass(frozen=True)
class _Entry:
  """Where one leaf of ours comes from."""
  collection: str                          # 'params' or 'batch_stats'
  path: Tuple[str, ...]                    # our module names, then the leaf's
  torch_key: Optional[str]                 # None for a fresh leaf
  torch_shape: Tuple[int, ...]
  transpose: Optional[Tuple[int, ...]]     # PyTorch layout -> ours
  head: bool                               # the classifier or an exit head
  fresh: bool = False                      # no PyTorch counterpart (BYOT's exits)


def _entries(model: nn.Module) -> List[_Entry]:
  name_of, _ = _family(model)
  # Parameter shapes do not depend on the input's side (every model pools
  # globally), so a small abstract input serves every model.
  shapes = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  entries = []
  for collection in ("params", "batch_stats"):
    for key_path, leaf in jax.tree.flatten_with_path(shapes.get(collection, {}))[0]:
      path = tuple(k.key for k in key_path)
      module, name = path[:-1], path[-1]
      if _is_fresh_module(model, module):
        entries.append(_Entry(collection, path, None, tuple(leaf.shape), None, False, fresh=True))
        continue
      prefix = name_of(module)
      head = module[-1] == "head" or module[-1].endswith("_head")
      shape = tuple(leaf.shape)
      if name == "kernel" and len(shape) == 4:      # conv: HWIO <- OIHW
        torch_name, torch_shape, transpose = "weight", (shape[3], shape[2], shape[0], shape[1]), (2, 3, 1, 0)
      elif name == "kernel":                         # linear: (in, out) <- (out, in)
        torch_name, torch_shape, transpose = "weight", (shape[1], shape[0]), (1, 0)
      else:
        torch_name = {"scale": "weight", "bias": "bias", "mean": "running_mean",
                      "var": "running_var"}[name]
        torch_shape, transpose = shape, None
      entries.append(_Entry(collection, path, f"{prefix}.{torch_name}", torch_shape,
                            transpose, head))
  return entries


# --- Reading ----------------------------------------------------------------

def read_pytorch_weights(weights: Weights) -> Dict[str, np.ndarray]:
  """A PyTorch state dict as {name: float32 NumPy array}, from a mapping or a file.

  Args:
    weights: a mapping of names to arrays (torch tensors work when torch is
      installed); or a path to a `.safetensors` file (read with
      `safetensors.numpy`, no torch needed), or to a `.pth` / `.pt` file saved
      with `torch.save(model.state_dict(), path)` (needs torch; read with
      `weights_only=True`, so no pickled code runs). A file holding a dict
      with the state dict under 'state_dict' or 'model' works too.

  Returns:
    The state dict with `nn.DataParallel`'s 'module.' prefix removed (when
    every key has it), `num_batches_tracked` dropped, and torchvision's old
    DenseNet names ('denselayer1.norm.1.weight') renamed as torchvision
    renames them ('denselayer1.norm1.weight').
  """
  if isinstance(weights, (str, os.PathLike)):
    state_dict = _read_file(os.fspath(weights))
  elif isinstance(weights, Mapping):
    state_dict = weights
  else:
    raise TypeError("`weights` must be a state dict (a mapping of names to arrays) or a path "
                    f"to a .safetensors / .pth / .pt file, got {type(weights).__name__}.")
  keys = list(state_dict)
  strip = "module." if keys and all(k.startswith("module.") for k in keys) else ""
  out = {}
  for key, value in state_dict.items():
    if not isinstance(key, str):
      raise TypeError(f"State dict keys must be strings, got {key!r}.")
    if key.endswith(_IGNORED_SUFFIXES):
      continue
    key = key[len(strip):]
    old = _OLD_DENSENET_KEY.match(key)
    if old:
      key = old[1] + old[2]
    out[key] = _to_numpy(value, key)
  return out


def _to_numpy(value, key: str) -> np.ndarray:
  if hasattr(value, "detach"):   # a torch tensor; bfloat16 has no NumPy view
    value = value.detach().cpu().float().numpy()
  array = np.asarray(value)
  if not (np.issubdtype(array.dtype, np.floating) or array.dtype.kind == "V"):
    raise TypeError(f"State dict entry {key!r} must hold floating point values, got {array.dtype}.")
  return array.astype(np.float32)


def _read_file(path: str) -> StateDict:
  if not os.path.exists(path):
    raise FileNotFoundError(f"No weights file at {path!r}.")
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("Reading .safetensors needs the `safetensors` package: "
                        "pip install 'zipfls_jax[models]' (or pip install safetensors).") from e
    return load_file(path)
  if path.endswith((".pth", ".pt")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"Reading {path!r} needs PyTorch, which is not installed. Either install torch, or "
          "convert the file once where torch is: safetensors.torch.save_file(state_dict, "
          "'weights.safetensors'), and pass the .safetensors file.") from e
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping):
      for key in ("state_dict", "model"):
        if key in loaded and isinstance(loaded[key], Mapping):
          return loaded[key]
      return loaded
    raise TypeError(f"{path!r} holds a {type(loaded).__name__}, not a state dict; save "
                    "`model.state_dict()` instead of the model.")
  raise ValueError(f"Unknown weights file type {path!r}: expected .safetensors, .pth or .pt.")


# --- Converting -------------------------------------------------------------

def _build(model, num_classes, model_options) -> nn.Module:
  if isinstance(model, str):
    if num_classes is None:
      raise ValueError(f"`num_classes` is needed to build model {model!r}.")
    return registry.get_model(model, num_classes=num_classes, **model_options)
  if num_classes is not None or model_options:
    raise ValueError("Pass `num_classes` and model options only with a model name; "
                     f"got a built {type(model).__name__}.")
  if not isinstance(model, nn.Module):
    raise TypeError(f"`model` must be a model name or a linen Module, got {type(model).__name__}.")
  return model


def _convert(model: nn.Module, state_dict: Dict[str, np.ndarray], entries: List[_Entry], *,
             skip_heads: bool) -> Dict[str, Any]:
  """The variables from a read state dict; raises ValueError on any mismatch."""
  _, optional_heads = _family(model)
  entries = [e for e in entries if not e.fresh]   # the caller keeps them
  expected = {e.torch_key: e for e in entries}
  head_modules = {e.torch_key.rsplit(".", 1)[0] for e in entries if e.head}

  def is_skippable(key):
    module = key.rsplit(".", 1)[0]
    if skip_heads and module in head_modules:
      return True
    # Heads (and exit BNs) that such checkpoints carry but this model lacks.
    return module in optional_heads and key not in expected

  missing = [e for e in entries if e.torch_key not in state_dict
             and not (skip_heads and e.head)]
  unknown = sorted(k for k in state_dict if k not in expected and not is_skippable(k))
  misshaped = [(e, state_dict[e.torch_key].shape) for e in entries
               if e.torch_key in state_dict and not (skip_heads and e.head)
               and tuple(state_dict[e.torch_key].shape) != e.torch_shape]
  if missing or unknown or misshaped:
    raise ValueError(_mismatch_message(type(model).__name__, missing, unknown, misshaped))

  variables: Dict[str, Any] = {"params": {}, "batch_stats": {}}
  for e in entries:
    if skip_heads and e.head:
      continue
    value = state_dict[e.torch_key]
    if e.transpose is not None:
      value = np.transpose(value, e.transpose)
    node = variables[e.collection]
    for name in e.path[:-1]:
      node = node.setdefault(name, {})
    node[e.path[-1]] = np.ascontiguousarray(value, np.float32)
  return variables


def _mismatch_message(model_name, missing, unknown, misshaped, limit=20) -> str:
  lines = [f"The PyTorch state dict does not fit {model_name}:"]

  def listed(title, items):
    if items:
      lines.append(f"  {title} ({len(items)}):")
      lines.extend(f"    {item}" for item in items[:limit])
      if len(items) > limit:
        lines.append(f"    ... and {len(items) - limit} more")

  listed("missing keys, expected shape", [f"{e.torch_key} {e.torch_shape}" for e in missing])
  listed("unknown keys", unknown)
  listed("mis-shaped keys, expected vs found",
         [f"{e.torch_key}: expected {e.torch_shape}, found {tuple(found)}" for e, found in misshaped])
  return "\n".join(lines)


def load_pytorch_weights(model: Union[nn.Module, str],
                         weights: Weights,
                         *,
                         num_classes: Optional[int] = None,
                         **model_options) -> Dict[str, Any]:
  """Converts a PyTorch state dict into the variables of one of our models.

  Example (torchvision's ResNet50 weights, exported once with
  `safetensors.torch.save_file(torchvision_model.state_dict(), path)`):

    model = get_model('resnet50', num_classes=1000)
    variables = load_pytorch_weights(model, 'resnet50.safetensors')
    out = model.apply(variables, images, train=False)

  Every weight must be there with its shape: nothing is guessed. Keys that
  hold no weights (`num_batches_tracked`) are ignored, and so are heads a
  checkpoint of that family carries but the model was built without: the
  authors' CIFAR models always hold both exits (`linear2`, `linear3`, and
  `bn2`, `bn3` for the DenseNet), and their ImageNet runs added such exits to
  torchvision's ResNets and a separate voting `linear` to DenseNet121 and
  MobileNetV2. Build the model with `exits=True` to load the exits.

  Args:
    model: a Module from `get_model` (any registered name, tiny variants and
      model options included), or a registered name, then built with
      `num_classes` and `model_options` (e.g. `exits=True`).
    weights: a state dict (names -> arrays) or a file path; see
      `read_pytorch_weights`.
    num_classes: C, with a model name only.
    **model_options: further `get_model` arguments, with a model name only.

  Returns:
    {'params': ..., 'batch_stats': ...}: float32 NumPy arrays in the tree
    `model.init` gives.

  Raises:
    ValueError: naming every missing, unknown or mis-shaped key, with the
      expected and found shapes (PyTorch layout); or for a model with BYOT's
      bottleneck exits, which no such checkpoint holds (build it without
      exits, or use `merge_pytorch_weights`, which keeps them as
      initialised).
    TypeError: for a model without a PyTorch naming rule, or bad `weights`.
  """
  model = _build(model, num_classes, model_options)
  if _has_bottleneck_exits(model):
    raise ValueError(
        f"load_pytorch_weights: the {type(model).__name__} has bottleneck exits "
        "(`exits=True, exit_type='bottleneck'`, BYOT's), which no PyTorch checkpoint of its family "
        "holds. Load into the model built without exits, or initialise the model with exits and "
        "use merge_pytorch_weights, which keeps the exits as initialised.")
  return _convert(model, read_pytorch_weights(weights), _entries(model), skip_heads=False)


def merge_pytorch_weights(variables: Mapping[str, Any],
                          model: nn.Module,
                          weights: Weights) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
  """Puts PyTorch weights into initialised `variables`, for fine-tuning.

  The backbone always comes from `weights` (as `load_pytorch_weights`, just
  as strictly). The classifier and the exit heads come from `weights` too when
  their class count is the model's; otherwise (e.g. ImageNet weights for
  iNat's 10,000 classes) they keep their values in `variables`, i.e. are
  re-initialised. BYOT's bottleneck exits (`exit_type='bottleneck'`: their
  bottlenecks and heads) have no PyTorch counterpart and always keep their
  values in `variables`.

  Args:
    variables: `model.init(...)`'s {'params', 'batch_stats'}.
    model: the Module the variables belong to.
    weights: a state dict or a file path; see `read_pytorch_weights`.

  Returns:
    (variables, kept): the merged variables (the input's leaf types for the
    kept modules, NumPy arrays elsewhere) and the sorted names of the
    top-level modules kept from `variables`: the heads when the class counts
    differ, and any bottleneck exits (empty otherwise).
  """
  model = _build(model, None, {})
  state_dict = read_pytorch_weights(weights)
  entries = _entries(model)
  heads = {e.path[0] for e in entries if e.head}
  fresh = {e.path[0] for e in entries if e.fresh}
  same_classes = all(
      e.torch_key in state_dict and tuple(state_dict[e.torch_key].shape) == e.torch_shape
      for e in entries if e.head)
  loaded = _convert(model, state_dict, entries, skip_heads=not same_classes)
  # Top-level modules are replaced whole: a head is either all loaded or all kept.
  merged = {c: {**variables.get(c, {}), **loaded[c]} for c in ("params", "batch_stats")}
  return merged, tuple(sorted(fresh if same_classes else fresh | heads))
