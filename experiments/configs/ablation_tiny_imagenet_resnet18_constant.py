"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with uniform weight over the
non-target classes.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "constant"
  return config
