"""Training: state, objective, pure steps, data parallelism, checkpoints, metrics.

Importing this package pulls jax, flax, optax and orbax but never TensorFlow
(the metric writer imports it only when TensorBoard output is asked for).
The experiment loop is `zipfls_jax.training.loop.train_and_evaluate`; every
config key it reads is listed in `zipfls_jax.training.config`.
"""
from zipfls_jax.training.checkpoint import Checkpoints, check_workdir_config
from zipfls_jax.training.metrics import MetricWriter, Progress, check_finite, read_metrics
from zipfls_jax.training.objective import METHODS, Objective, compute_loss, global_mean
from zipfls_jax.training.optim import SCHEDULES, create_learning_rate_schedule, create_optimizer
from zipfls_jax.training.parallel import (
    BATCH_NORM_MODES,
    DATA_AXIS,
    batch_sharded,
    compile_eval_step,
    compile_train_step,
    make_data_mesh,
    pmap_train_step,
    prefetch_to_mesh,
    replicated,
    shard_batch,
)
from zipfls_jax.training.state import TrainState, create_train_state
from zipfls_jax.training.step import make_eval_step, make_train_step, topk_correct

__all__ = [
    "BATCH_NORM_MODES",
    "Checkpoints",
    "DATA_AXIS",
    "METHODS",
    "MetricWriter",
    "Objective",
    "Progress",
    "SCHEDULES",
    "TrainState",
    "batch_sharded",
    "check_finite",
    "check_workdir_config",
    "compile_eval_step",
    "compile_train_step",
    "compute_loss",
    "create_learning_rate_schedule",
    "create_optimizer",
    "create_train_state",
    "global_mean",
    "make_data_mesh",
    "make_eval_step",
    "make_train_step",
    "pmap_train_step",
    "prefetch_to_mesh",
    "read_metrics",
    "replicated",
    "shard_batch",
    "topk_correct",
]
