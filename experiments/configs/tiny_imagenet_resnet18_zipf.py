"""TinyImageNet, CIFAR ResNet18, Zipf's LS (docs/method.md section 6).

Votes: the final 4x4 map resized x2 (64 votes), as in the paper's
ResNet18 numbers.
"""
from experiments.configs import default


def get_config():
  return default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
