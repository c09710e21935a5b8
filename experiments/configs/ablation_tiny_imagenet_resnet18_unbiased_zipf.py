"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with the Zipf density
integrated over each rank cell.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "unbiased_zipf"
  return config
