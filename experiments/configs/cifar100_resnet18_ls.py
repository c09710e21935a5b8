"""CIFAR-100, CIFAR ResNet18, label smoothing (eps 0.1) (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_resnet18", "ls")
