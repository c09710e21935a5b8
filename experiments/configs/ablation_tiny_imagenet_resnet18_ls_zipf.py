"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with label smoothing towards
the Zipf targets: (1 - eps) onehot + eps q.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.method = "ls_zipf"
  return config
