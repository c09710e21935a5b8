"""CIFAR-100, CIFAR DenseNet121, label smoothing (eps 0.1) (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_densenet121", "ls")
