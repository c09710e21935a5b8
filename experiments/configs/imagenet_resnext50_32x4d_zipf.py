"""ImageNet, resnext50_32x4d, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "resnext50_32x4d", "zipf")
