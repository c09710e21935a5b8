"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with weights decaying linearly with rank."""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "linear_decay"
  config.loss.smallest_prob = 0.001  # <= 1/C = 0.005
  return config
