"""ImageNet, resnet18, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "resnet18", "zipf")
