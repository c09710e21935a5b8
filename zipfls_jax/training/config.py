"""Every key of a run's config, with its meaning, and the check of a config.

`base_config()` is the schema: the paper's CIFAR-100 CIFAR-ResNet18 CE run
(docs/method.md section 6). Experiment configs start from it and change only
what differs; `validate_config` refuses keys it does not know and the values
out of range that no builder checks, naming them (the objective's and the
optimizer's values are checked by what they build). This module must not
build models or read data.
"""
from __future__ import annotations

from typing import Optional

import jax
import ml_collections

from zipfls_jax.training import objective as objective_lib

DTYPES = ("float32", "bfloat16")
# Keys that may change between the runs of one workdir (and between the
# seeds of one results-table cell): they do not change what is computed.
RESUMABLE_KEYS = ("data_dir", "log_every_steps", "checkpoint_every_steps",
                  "max_checkpoints_to_keep", "tensorboard", "distributed", "transfer_guard",
                  "console")


def base_config() -> ml_collections.ConfigDict:
  """The default run: CIFAR-100, CIFAR ResNet18, cross-entropy, 200 epochs."""
  c = ml_collections.ConfigDict()
  # Data (zipfls_jax.data names).
  c.dataset = "cifar100"
  c.data_dir = ""              # '' = tfds's default data dir.
  c.image_size = 0             # 0 = the dataset's own size.
  # Model (zipfls_jax.models.get_model).
  c.model = "cifar_resnet18"
  c.exits = False              # intermediate exit heads (CIFAR models).
  c.vote_exits = False         # with exits, the exits vote too.
  c.vote_upsample = 2          # bilinear resize before voting; 0 = none.
  c.zero_init_residual = False
  # Further keyword arguments of get_model (e.g. widths=(16, 32, 64, 128));
  # free-form, so set them in a config file.
  c.model_options = ml_collections.ConfigDict()
  c.dtype = "float32"          # compute dtype: 'float32' or 'bfloat16'.
  c.batch_norm = "sync"        # 'sync' (global batch) or 'per_device'.
  # Objective: method ('ce', 'ls', 'zipf', 'ls_zipf'), ls_eps, lam, rank_by
  # ('votes', 'logits'), correct_only, exit_weight and the target distribution
  # (distribution, power, smallest_prob, decay, lower_bound, upper_bound).
  # Documented, defaulted and checked once, by zipfls_jax.training.Objective
  # and zipfls_jax.TargetDistribution; upper_bound None is a float placeholder.
  c.loss = ml_collections.ConfigDict({
      key: ml_collections.config_dict.placeholder(float) if value is None else value
      for key, value in objective_lib.Objective().to_config().items()})
  # Optimisation: SGD, momentum 0.9, no Nesterov, weight decay on all params.
  c.batch_size = 128           # global, over all devices and hosts.
  c.num_epochs = 200.0
  c.num_train_steps = -1       # > 0 overrides num_epochs.
  c.steps_per_epoch = -1       # > 0 overrides train examples // batch size.
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 1e-4
  c.lr_schedule = "step"       # 'step', 'step_every', 'cosine', 'constant'.
  c.lr_decay_at = (0.5, 0.75)  # 'step': fractions of training.
  c.lr_decay_every_epochs = 30.0  # 'step_every'.
  c.lr_decay_factor = 0.1
  c.warmup_epochs = 0.0
  # Evaluation, logging, checkpoints.
  c.eval_batch_size = 256
  c.eval_every_epochs = 1.0
  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.max_checkpoints_to_keep = 2
  c.tensorboard = True
  c.console = True             # print a progress line per logging step.
  c.transfer_guard = True      # fail on hidden host<->device copies in the step.
  c.distributed = False        # call jax.distributed.initialize() (multi-host).
  c.seed = 0
  return c


def validate_config(config: ml_collections.ConfigDict,
                    reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Checks a config's keys against `base_config()` and the values no builder owns.

  The values that configure the objective, the schedule and the optimizer
  are checked once, by what they build (`Objective`, `optim`), when
  `loop.build_setup` builds it; their messages name the config key too.

  Raises:
    ValueError: naming each unknown or missing key, or the bad value.
  """
  from zipfls_jax.training import parallel  # pylint: disable=g-import-not-at-top
  reference = base_config() if reference is None else reference
  unknown, missing = [], []
  _compare_keys(config.to_dict(), reference.to_dict(), "config", unknown, missing)
  if unknown or missing:
    raise ValueError("Bad config keys:" +
                     (f" unknown {unknown};" if unknown else "") +
                     (f" missing {missing};" if missing else "") +
                     " every key is listed in zipfls_jax/training/config.py.")
  if config.dtype not in DTYPES:
    raise ValueError(f"config.dtype must be one of {DTYPES}, got {config.dtype!r}.")
  if config.batch_norm not in parallel.BATCH_NORM_MODES:
    raise ValueError(f"config.batch_norm must be one of {parallel.BATCH_NORM_MODES}, "
                     f"got {config.batch_norm!r}.")
  for key in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
              "max_checkpoints_to_keep", "eval_every_epochs"):
    if config[key] <= 0:
      raise ValueError(f"config.{key} must be > 0, got {config[key]}.")
  for key in ("batch_size", "eval_batch_size"):
    if config[key] % jax.device_count():
      raise ValueError(f"config.{key}={config[key]} must divide by the {jax.device_count()} "
                       "devices (it is the global batch, split evenly).")
  if config.num_epochs <= 0 and config.num_train_steps <= 0:
    raise ValueError("Set config.num_epochs > 0 or config.num_train_steps > 0.")
  for key in ("image_size", "vote_upsample"):
    if config[key] < 0:
      raise ValueError(f"config.{key} must be >= 0, got {config[key]}.")


def _compare_keys(config, reference, prefix, unknown, missing):
  for key in config:
    if f"{prefix}.{key}" == "config.model_options":
      continue
    if key not in reference:
      unknown.append(f"{prefix}.{key}")
    elif isinstance(reference[key], dict) and isinstance(config[key], dict):
      _compare_keys(config[key], reference[key], f"{prefix}.{key}", unknown, missing)
  missing.extend(f"{prefix}.{key}" for key in reference if key not in config)
