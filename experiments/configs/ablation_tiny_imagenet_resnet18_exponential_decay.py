"""Ablation, TinyImageNet, CIFAR ResNet18, Zipf's LS with weights exp(-(rank - 1))."""
from experiments.configs import default


def get_config():
  config = default.recipe("tiny_imagenet", "cifar_resnet18", "zipf")
  config.loss.distribution = "exponential_decay"
  config.loss.decay = 1.0
  return config
