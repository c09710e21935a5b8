"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with Pareto samples sorted onto the ranks."""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "sorted_pareto"
  return config
