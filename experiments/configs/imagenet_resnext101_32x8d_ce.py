"""ImageNet, resnext101_32x8d, cross-entropy (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "resnext101_32x8d", "ce")
