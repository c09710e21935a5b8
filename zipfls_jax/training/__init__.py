"""Training: state, methods (objectives), pure steps, data parallelism, checkpoints, metrics.

Importing this package pulls jax, flax, optax and orbax but never TensorFlow
(the metric writer imports it only when TensorBoard output is asked for).
The experiment loop is `zipfls_jax.training.loop.train_and_evaluate`; every
config key it reads is listed in `zipfls_jax.training.config`.
"""
from zipfls_jax import extras

extras.require("zipfls_jax.training",
               ("flax", "optax", "orbax", "ml_collections", "etils"), "experiments")

# pylint: disable=g-import-not-at-top,wrong-import-position
from zipfls_jax.training.checkpoint import Checkpoints, check_workdir_config
from zipfls_jax.training.metrics import MetricWriter, Progress, check_finite, read_metrics
from zipfls_jax.training import methods
from zipfls_jax.training.methods import (METHOD_NAMES, METHODS, Method, Objective, compute_loss,
                                         global_mean)
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
from zipfls_jax.training.state import TrainState, create_train_state, init_from_pytorch
from zipfls_jax.training.step import make_eval_step, make_train_step, topk_correct

__all__ = [
    "BATCH_NORM_MODES",
    "Checkpoints",
    "DATA_AXIS",
    "METHODS",
    "METHOD_NAMES",
    "Method",
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
    "init_from_pytorch",
    "make_data_mesh",
    "make_eval_step",
    "make_train_step",
    "methods",
    "pmap_train_step",
    "prefetch_to_mesh",
    "read_metrics",
    "replicated",
    "shard_batch",
    "topk_correct",
]
