"""Input pipelines: tfds datasets, the authors' augmentations, exact eval.

    spec = get_dataset_spec('cifar100')
    train = create_train_iterator('cifar100', global_batch_size=128, seed=0)
    for batch in create_eval_iterator('cifar100', global_batch_size=128):
      ...  # batch['image'], batch['label'], batch['mask']

The train stream also serves the self-distillation methods:
`friends=k` orders it with `ClassPairedSampler` (CS-KD, BAKE: groups of
k + 1 same-class rows, plus each row's 'index'), `views=2` adds 'image2', a
second augmentation of each example (DDGSD), and `with_index=True` adds
'index' to the plain stream (PS-KD). Random access for `friends`
comes from host memory for the small datasets and from tfds's array_record
files for ImageNet and iNat21 (`prepare_dataset(..., file_format=
'array_record')`).

Datasets must be prepared first: `prepare_dataset(name, data_dir=...)` or
`python -m zipfls_jax.data.prepare --dataset=NAME --data_dir=DIR`
(Fashion-MNIST works offline too; `prepare_fashion_mnist(data_dir)` adds
its source options).

`get_dataset_spec` and `DATASET_NAMES` are plain metadata; TensorFlow and
tfds are imported (and GPUs hidden from TensorFlow) only when a pipeline,
builder or preparation function is first used, so configs and models can
ask for class counts cheaply. `zipfls_jax` and `zipfls_jax.models` never
import this package; it never imports the training code.
"""
import importlib
import os

# TensorFlow's C++ INFO notices (oneDNN, CPU features) on import and first
# op: set before any submodule can import TensorFlow, and only as a default,
# so a user's own TF_CPP_MIN_LOG_LEVEL wins. Warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# TensorFlow 2.21 prints its oneDNN notice (twice) whatever the log level.
# TensorFlow only runs the input pipeline here (decode, crop, flip, resize,
# casts), none of the network ops oneDNN speeds up, so its plain kernels are
# used instead; this also keeps the pipeline's numerics the same on every
# CPU. Also only a default: a user's own TF_ENABLE_ONEDNN_OPTS wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# pylint: disable=g-import-not-at-top,wrong-import-position
from zipfls_jax import extras
from zipfls_jax.data.specs import DATASET_NAMES
from zipfls_jax.data.specs import DatasetSpec
from zipfls_jax.data.specs import get_dataset_spec

# Public name -> submodule defining it; loaded on first access (PEP 562).
_LAZY = {
    "create_eval_iterator": "pipeline",
    "create_train_iterator": "pipeline",
    "eval_dataset": "pipeline",
    "num_examples": "pipeline",
    "train_dataset": "pipeline",
    "get_builder": "sources",
    "prepare_dataset": "sources",
    "prepare_fashion_mnist": "fashion_mnist",
    "ClassPairedSampler": "samplers",
    "check_random_access": "pipeline",
}


def __getattr__(name):
  if name in _LAZY:
    extras.require(f"zipfls_jax.data.{name}", ("tensorflow", "tensorflow_datasets", "etils"),
                   "experiments")
    module = importlib.import_module(f"zipfls_jax.data.{_LAZY[name]}")
    value = getattr(module, name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'zipfls_jax.data' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "DATASET_NAMES",
    "DatasetSpec",
    "get_dataset_spec",
    *_LAZY,
]
