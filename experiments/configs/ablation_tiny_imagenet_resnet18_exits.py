"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with multi-exit: votes from
the final head and both exits, exit CE weighted by alpha = 1 (not a published
run).
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.exits = True
  config.vote_exits = True
  config.loss.exit_weight = 1.0
  return config
