"""CIFAR-100, CIFAR ResNet18, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_resnet18", "zipf")
