"""TinyImageNet, CIFAR ResNet18, cross-entropy (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("tiny_imagenet", "cifar_resnet18", "ce")
