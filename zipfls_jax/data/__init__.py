"""Input pipelines: tfds datasets, the authors' augmentations, exact eval.

Importing this package imports TensorFlow and tfds (and hides GPUs from
TensorFlow); `zipfls_jax` and `zipfls_jax.models` never import it. It never
imports the training code.

    spec = get_dataset_spec('cifar100')
    train = create_train_iterator('cifar100', global_batch_size=128, seed=0)
    for batch in create_eval_iterator('cifar100', global_batch_size=128):
      ...  # batch['image'], batch['label'], batch['mask']

Datasets must be prepared first: `prepare_dataset(name, data_dir=...)` or
`python -m zipfls_jax.data.prepare --dataset=NAME --data_dir=DIR`;
Fashion-MNIST also offline with `prepare_fashion_mnist(data_dir)`.
"""
from zipfls_jax.data.fashion_mnist import prepare_fashion_mnist
from zipfls_jax.data.pipeline import create_eval_iterator
from zipfls_jax.data.pipeline import create_train_iterator
from zipfls_jax.data.pipeline import eval_dataset
from zipfls_jax.data.pipeline import num_examples
from zipfls_jax.data.pipeline import train_dataset
from zipfls_jax.data.sources import get_builder
from zipfls_jax.data.sources import prepare_dataset
from zipfls_jax.data.specs import DATASET_NAMES
from zipfls_jax.data.specs import DatasetSpec
from zipfls_jax.data.specs import get_dataset_spec

__all__ = [
    "DATASET_NAMES",
    "DatasetSpec",
    "create_eval_iterator",
    "create_train_iterator",
    "eval_dataset",
    "get_builder",
    "get_dataset_spec",
    "num_examples",
    "prepare_dataset",
    "prepare_fashion_mnist",
    "train_dataset",
]
