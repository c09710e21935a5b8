"""ImageNet, mobilenet_v2, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "mobilenet_v2", "zipf")
