r"""The paper's runs, one config for all (docs/method.md section 6).

    python -m experiments.train \
        --config=experiments/configs/paper.py:tiny_imagenet,cifar_resnet18,zipf \
        --workdir=workdirs/tin_r18_zipf_s0 --config.seed=0

The argument after ':' is `dataset,model,method[,ablation]`: a dataset and
a model as `zipfls_jax.data` and `zipfls_jax.models` name them, a method of
`METHODS`, and optionally one of `ABLATIONS`, the variants of Zipf's LS
studied in the paper (e.g. `...,zipf,constant`). `recipe()` gives the
authors' settings for that dataset, and for a self-distillation baseline
its hyperparameters for that dataset and model (`method_settings()`, with
their sources); every other key is
`zipfls_jax.training.config.base_config()`'s. `python -m
experiments.configs.paper` lists the published runs (`published_runs()`)
and the runs of the paper's comparison of methods (`comparison_runs()`).
"""
from __future__ import annotations

from typing import List, Optional

import ml_collections

from zipfls_jax.training.config import base_config

# lambda, vote resize, batch, epochs and schedule per dataset (method.md 6).
DATASET_RECIPES = {
    "cifar100": dict(lam=0.1, vote_upsample=2, batch_size=128, num_epochs=200.0,
                     lr_schedule="step"),
    "tiny_imagenet": dict(lam=1.0, vote_upsample=2, batch_size=128, num_epochs=200.0,
                          lr_schedule="step"),
    "imagenet2012": dict(lam=0.1, vote_upsample=0, batch_size=256, num_epochs=100.0,
                         lr_schedule="step_every"),
    "i_naturalist2021": dict(lam=1.0, vote_upsample=0, batch_size=256, num_epochs=100.0,
                             lr_schedule="step_every"),
}
# The paper's own runs (its tables) train these.
PAPER_METHODS = ("ce", "ls", "zipf")
# The comparison with the other label-smoothing and self-distillation methods
# (docs/method.md section 4) adds these (zipfls_jax.training.methods).
BASELINES = ("tf_kd", "cs_kd", "bake", "ddgsd", "byot", "ols", "ps_kd", "ban")
METHODS = PAPER_METHODS + BASELINES
# Models whose published runs voted on the final map unresized whatever the
# dataset's resize: the authors' CIFAR_DenseNet121 drops their `upsample`
# argument, so its CIFAR-100 and TinyImageNet numbers come from 16 votes on
# the 4x4 map. A run can still resize: `--config.vote_upsample=2`.
UNRESIZED_VOTES = ("cifar_densenet121",)

# The ablations of Zipf's LS: what each changes in the 'zipf' run (flattened
# config keys). They are published on TinyImageNet / CIFAR ResNet18.
ABLATIONS = {
    # Target distributions over the ranks (method.md section 3).
    "constant": {"loss.distribution": "constant"},
    "random_uniform": {"loss.distribution": "random_uniform"},
    "random_gaussian": {"loss.distribution": "random_gaussian"},
    "random_pareto": {"loss.distribution": "random_pareto"},
    "sorted_pareto": {"loss.distribution": "sorted_pareto"},
    # smallest_prob must stay <= 1/C (0.005 on TinyImageNet).
    "linear_decay": {"loss.distribution": "linear_decay", "loss.smallest_prob": 0.001},
    "exponential_decay": {"loss.distribution": "exponential_decay", "loss.decay": 1.0},
    "unbiased_zipf": {"loss.distribution": "unbiased_zipf"},
    # Zipf weights over the ranks of the logits instead of dense votes.
    "logit_rank": {"loss.rank_by": "logits"},
    # The Zipf term averaged over correctly classified examples only.
    "correct_only": {"loss.correct_only": True},
    # Label smoothing towards the Zipf targets: (1 - eps) onehot + eps q.
    "ls_zipf": {"loss.method": "ls_zipf"},
    # Multi-exit: the final head and both exits vote, exit CE weighted by
    # alpha = 1 (not a published run).
    "exits": {"exits": True, "vote_exits": True, "loss.exit_weight": 1.0},
}

_CIFAR_MODELS = ("cifar_resnet18", "cifar_densenet121")
_IMAGENET_MODELS = ("resnet18", "resnet50", "resnet101", "resnext50_32x4d",
                    "resnext101_32x8d", "densenet121", "mobilenet_v2")


def published_runs() -> List[str]:
  """Every run of the paper's tables, as the argument `paper.py:` takes."""
  runs = [f"{dataset},{model},{method}"
          for dataset in ("cifar100", "tiny_imagenet") for model in _CIFAR_MODELS
          for method in PAPER_METHODS]
  runs += [f"imagenet2012,{model},{method}" for model in _IMAGENET_MODELS
           for method in PAPER_METHODS]
  runs += [f"i_naturalist2021,resnet50,{method}" for method in PAPER_METHODS]
  runs += [f"tiny_imagenet,cifar_resnet18,zipf,{ablation}" for ablation in ABLATIONS]
  return runs


# Models with BYOT's bottleneck exits (zipfls_jax.models); the DenseNets have none.
_BYOT_MODELS = ("cifar_resnet18", "resnet18", "resnet50", "resnet101", "resnext50_32x4d",
                "resnext101_32x8d")


def comparison_runs() -> List[str]:
  """The baselines' runs: the paper's comparison cell (TinyImageNet, CIFAR
  ResNet18) first, then both CIFAR models on CIFAR-100 and TinyImageNet and
  the ResNet50 on iNat21 (BYOT only where the model has its exits)."""
  cells = [("tiny_imagenet", "cifar_resnet18"), ("cifar100", "cifar_resnet18"),
           ("cifar100", "cifar_densenet121"), ("tiny_imagenet", "cifar_densenet121"),
           ("i_naturalist2021", "resnet50")]
  # BAN needs a trained teacher: `...,ban --config.teacher.workdir=<the CE run>`.
  return [f"{dataset},{model},{method}" for dataset, model in cells for method in BASELINES
          if method != "ban" and (method != "byot" or model in _BYOT_MODELS)]


def method_settings(dataset: str, model: str, method: str) -> dict:
  """A baseline's hyperparameters for a dataset and model (flattened config keys).

  Sources (docs/method.md section 4): the Zipf authors' runs where they
  give values (TF-KD, CS-KD, BAKE), else the method's own paper or code
  (DDGSD, BYOT, OLS, PS-KD: their blocks' defaults).
  """
  cifar = dataset in ("cifar100", "tiny_imagenet")
  if method == "tf_kd":
    # The authors' method_configs.py: T and multiplier per model, reg_alpha 0.1.
    # (The demo's tiny CIFAR models take their full-size model's values.)
    temperature, multiplier = ((20.0, 100.0) if model.startswith("cifar_resnet") else
                               (40.0, 1.0) if model.startswith("cifar_densenet") else
                               (20.0, 1.0))
    return {"loss.tf_kd.temperature": temperature, "loss.tf_kd.multiplier": multiplier,
            "loss.tf_kd.reg_alpha": 0.1}
  if method == "cs_kd":
    # lambda 1 on the CIFAR-size sets, 3 for the ImageNet-size models; T 4.
    return {"loss.cs_kd.weight": 1.0 if cifar else 3.0, "loss.cs_kd.temperature": 4.0}
  if method == "bake":
    # omega 0.9 with 1 friend on TinyImageNet, 0.5 with 3 on CIFAR-100 (BAKE's
    # default), 0.5 with 1 at ImageNet size; T 4, lambda 1.
    omega, friends = {"tiny_imagenet": (0.9, 1), "cifar100": (0.5, 3)}.get(dataset, (0.5, 1))
    return {"loss.bake.omega": omega, "loss.bake.friends": friends}
  if method == "byot":
    return {"exits": True, "exit_type": "bottleneck"}
  return {}


def recipe(dataset: str, model: str, method: str,
           ablation: Optional[str] = None) -> ml_collections.ConfigDict:
  """The authors' run of `model` on `dataset` trained with `method`.

  Args:
    dataset: a key of `DATASET_RECIPES`.
    model: a `zipfls_jax.models` name (checked when the run builds it).
    method: one of `METHODS`: 'ce', 'ls', 'zipf' or a baseline.
    ablation: None, or a key of `ABLATIONS` (with method 'zipf').
  """
  if dataset not in DATASET_RECIPES:
    raise ValueError(f"dataset must be one of {tuple(DATASET_RECIPES)}, got {dataset!r}.")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
  if ablation is not None and ablation not in ABLATIONS:
    raise ValueError(f"ablation must be one of {tuple(ABLATIONS)}, got {ablation!r}.")
  if ablation is not None and method != "zipf":
    raise ValueError(f"ablation {ablation!r} is a variant of method 'zipf', got method "
                     f"{method!r}.")
  settings = DATASET_RECIPES[dataset]
  config = base_config()
  config.dataset = dataset
  config.model = model
  config.loss.method = method
  config.loss.lam = settings["lam"]
  config.vote_upsample = 0 if model in UNRESIZED_VOTES else settings["vote_upsample"]
  config.batch_size = settings["batch_size"]
  config.num_epochs = settings["num_epochs"]
  config.lr_schedule = settings["lr_schedule"]
  if settings["batch_size"] == 256:
    config.log_every_steps = 500
    config.checkpoint_every_steps = 2000
  config.update_from_flattened_dict(method_settings(dataset, model, method))
  if ablation is not None:
    config.update_from_flattened_dict(ABLATIONS[ablation])
  return config


def get_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """`paper.py:dataset,model,method[,ablation]`, e.g. `tiny_imagenet,cifar_resnet18,zipf`."""
  parts = [] if arg is None else [p.strip() for p in arg.split(",")]
  if len(parts) not in (3, 4):
    raise ValueError("paper.py needs 'dataset,model,method[,ablation]' after the file name, "
                     "e.g. --config=experiments/configs/paper.py:tiny_imagenet,cifar_resnet18,"
                     f"zipf; got {arg!r}. `python -m experiments.configs.paper` lists the "
                     "published runs.")
  return recipe(*parts)


if __name__ == "__main__":
  print("# The paper's runs")
  print("\n".join(published_runs()))
  print("# The comparison with the other methods (docs/method.md section 4)")
  print("\n".join(comparison_runs()))
