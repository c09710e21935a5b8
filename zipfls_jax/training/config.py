"""Every key of a run's config, with its meaning, and the check of a config.

`base_config()` is the schema: the paper's CIFAR-100 CIFAR-ResNet18 CE run
(docs/method.md section 6). Experiment configs start from it and change only
what differs; `validate_config` refuses keys it does not know and the values
out of range that no builder checks, naming them (the method's and the
optimizer's values are checked by what they build). This module must not
build models or read data.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import jax
import ml_collections

from zipfls_jax.training import methods as methods_lib

DTYPES = ("float32", "bfloat16")
# Keys that may change between the runs of one workdir (and between the
# seeds of one results-table cell): they do not change what is computed.
RESUMABLE_KEYS = ("data_dir", "log_every_steps", "checkpoint_every_steps",
                  "max_checkpoints_to_keep", "tensorboard", "distributed", "transfer_guard",
                  "console", "coordinator_address", "num_processes", "process_id",
                  "heartbeat_timeout_seconds", "allow_topology_change")


def base_config() -> ml_collections.ConfigDict:
  """The default run: CIFAR-100, CIFAR ResNet18, cross-entropy, 200 epochs."""
  c = ml_collections.ConfigDict()
  # Data (zipfls_jax.data names).
  c.dataset = "cifar100"
  c.data_dir = ""              # '' = tfds's default data dir.
  c.image_size = 0             # 0 = the dataset's own size.
  # Model (zipfls_jax.models.get_model).
  c.model = "cifar_resnet18"
  c.exits = False              # intermediate exit heads.
  # Their kind: 'linear' (the Zipf authors' heads on stages 2 and 3 of the CIFAR
  # models) or 'bottleneck' (BYOT's, after stages 1-3 of the ResNets).
  c.exit_type = "linear"
  c.vote_exits = False         # with exits, the exits vote too.
  c.vote_upsample = 2          # bilinear resize before voting; 0 = none.
  c.zero_init_residual = False
  # PyTorch weights to start from ('' = none): a local .safetensors file, or a
  # .pth / .pt state dict when torch is installed; torchvision names for the
  # ImageNet models, the authors' for the CIFAR ones (models.load_pytorch_weights).
  # The classifier and exit heads start afresh when the class count differs.
  # Ignored when the workdir already holds a checkpoint to resume.
  c.init_from = ""
  # Further keyword arguments of get_model (e.g. widths=(16, 32, 64, 128));
  # free-form, so set them in a config file.
  c.model_options = ml_collections.ConfigDict()
  c.dtype = "float32"          # compute dtype: 'float32' or 'bfloat16'.
  c.batch_norm = "sync"        # 'sync' (global batch) or 'per_device'.
  # The training method, config.loss.method: 'ce', 'ls', 'zipf', 'ls_zipf' (their
  # keys are flat: ls_eps, lam, rank_by ('votes', 'logits'), correct_only,
  # exit_weight and the target distribution: distribution, power, smallest_prob,
  # decay, lower_bound, upper_bound), or a self-distillation baseline 'tf_kd',
  # 'cs_kd', 'bake', 'ddgsd', 'byot' (keys in its block, e.g. loss.cs_kd.temperature).
  # Documented, defaulted and checked once, by zipfls_jax.training.methods (and
  # zipfls_jax.TargetDistribution); upper_bound None is a float placeholder.
  c.loss = ml_collections.ConfigDict({
      key: ml_collections.config_dict.placeholder(float) if value is None else value
      for key, value in methods_lib.default_loss_config().items()})
  # The frozen teacher of loss.method='ban' (knowledge distillation): a finished
  # run's workdir of the same dataset; its latest checkpoint is loaded once and
  # kept in the student's checkpoints.
  c.teacher = ml_collections.ConfigDict({"workdir": ""})
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
  c.max_checkpoints_to_keep = 2  # >= 2: a damaged latest one falls back to the previous.
  c.tensorboard = True
  c.console = True             # print a progress line per logging step.
  c.transfer_guard = True      # fail on hidden host<->device copies in the step.
  # Several processes (hosts): each calls jax.distributed.initialize().
  c.distributed = False
  c.coordinator_address = ""   # process 0's HOST:PORT; '' = $JAX_COORDINATOR_ADDRESS or detected.
  c.num_processes = 0          # 0 = $JAX_NUM_PROCESSES or detected (TPU VM, SLURM, Open MPI).
  c.process_id = -1            # -1 = $JAX_PROCESS_ID or detected.
  c.heartbeat_timeout_seconds = 100  # a process silent this long fails the others' run.
  # Resume a checkpoint written on another process/device count (the rest of
  # the run then differs from an uninterrupted one).
  c.allow_topology_change = False
  c.seed = 0                   # in [0, 2**31).
  return c


def validate_config(config: ml_collections.ConfigDict,
                    reference: Optional[ml_collections.ConfigDict] = None) -> None:
  """Checks a config's keys against `base_config()` and the values no builder owns.

  The values that configure the method, the schedule and the optimizer
  are checked once, by what they build (`methods.from_config`, `optim`), when
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
  for name, value in _flat_items(config.to_dict(), "config"):
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{name} must be a finite number, got {value}.")
  if not 0 <= config.seed < 2**31:
    raise ValueError(f"config.seed must lie in [0, 2**31), got {config.seed}.")
  if config.max_checkpoints_to_keep < 2:
    raise ValueError("config.max_checkpoints_to_keep must be >= 2 (a damaged latest "
                     f"checkpoint falls back to the previous one), got "
                     f"{config.max_checkpoints_to_keep}.")
  if config.num_processes < 0 or config.process_id < -1 or config.heartbeat_timeout_seconds <= 0:
    raise ValueError("config.num_processes must be >= 0, config.process_id >= -1 and "
                     "config.heartbeat_timeout_seconds > 0; got "
                     f"{config.num_processes}, {config.process_id}, "
                     f"{config.heartbeat_timeout_seconds}.")
  if not isinstance(config.init_from, str):
    raise ValueError(f"config.init_from must be a path string ('' for none), got "
                     f"{config.init_from!r}.")
  if config.init_from and not os.path.isfile(config.init_from):
    # Before any compilation: a typo should not cost a model's init.
    raise FileNotFoundError(f"config.init_from: no weights file at {config.init_from!r}.")
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


def _flat_items(tree, prefix):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat_items(value, f"{prefix}.{key}")
    else:
      yield f"{prefix}.{key}", value


def _compare_keys(config, reference, prefix, unknown, missing):
  for key in config:
    if f"{prefix}.{key}" == "config.model_options":
      continue
    if key not in reference:
      unknown.append(f"{prefix}.{key}")
    elif isinstance(reference[key], dict) and isinstance(config[key], dict):
      _compare_keys(config[key], reference[key], f"{prefix}.{key}", unknown, missing)
  missing.extend(f"{prefix}.{key}" for key in reference if key not in config)
