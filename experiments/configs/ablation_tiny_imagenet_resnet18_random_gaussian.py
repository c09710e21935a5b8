"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with |N(0, 1)| weights drawn
fresh each step.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "random_gaussian"
  return config
