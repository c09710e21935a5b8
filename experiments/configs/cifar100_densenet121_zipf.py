"""CIFAR-100, CIFAR DenseNet121, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_densenet121", "zipf")
