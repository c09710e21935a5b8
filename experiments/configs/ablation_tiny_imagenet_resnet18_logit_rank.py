"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with Zipf weights over the
ranks of the logits instead of dense votes.
"""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.rank_by = "logits"
  return config
