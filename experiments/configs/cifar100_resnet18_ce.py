"""CIFAR-100, CIFAR ResNet18, cross-entropy (docs/method.md section 6).

Votes (used by Zipf's LS only): the final 4x4 map resized x2 (64 votes), as in the paper's
ResNet18 numbers.
"""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_resnet18", "ce")
