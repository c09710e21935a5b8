"""ImageNet, resnet18, cross-entropy (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "resnet18", "ce")
