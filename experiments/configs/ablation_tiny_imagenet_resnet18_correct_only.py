"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with the Zipf term averaged
over correctly classified examples only.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.correct_only = True
  return config
