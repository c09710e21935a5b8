"""Flax linen classifiers with voting heads for Zipf's label smoothing.

The authors' architectures (docs/method.md section 5) as pure functional modules:
explicit `params` and `batch_stats`, so a training step stays a pure function
for `jax.jit`, `jax.shard_map` and `pmap`. Each returns a `ModelOutput`
(pooled logits, pooled features, optional dense votes, exit logits and,
for BYOT's bottleneck exits, exit features).
`VotingHead` gives any Flax backbone the same outputs. This package never
imports TensorFlow or the input pipelines.
"""
from zipfls_jax import extras

extras.require("zipfls_jax.models", ("flax",), "models")

# pylint: disable=g-import-not-at-top,wrong-import-position
from zipfls_jax.models.cifar_resnet import CifarResNet, PreActBlock
from zipfls_jax.models.densenet import DenseNet
from zipfls_jax.models.exits import EXIT_TYPES, without_exits
from zipfls_jax.models.heads import VotingHead
from zipfls_jax.models.mobilenet_v2 import MobileNetV2
from zipfls_jax.models.outputs import ModelOutput, join_exits
from zipfls_jax.models.pytorch_weights import (
    load_pytorch_weights,
    merge_pytorch_weights,
    read_pytorch_weights,
)
from zipfls_jax.models.registry import MODEL_NAMES, get_model
from zipfls_jax.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "DenseNet",
    "EXIT_TYPES",
    "MODEL_NAMES",
    "MobileNetV2",
    "ModelOutput",
    "PreActBlock",
    "ResNet",
    "VotingHead",
    "get_model",
    "join_exits",
    "load_pytorch_weights",
    "merge_pytorch_weights",
    "read_pytorch_weights",
    "without_exits",
]
