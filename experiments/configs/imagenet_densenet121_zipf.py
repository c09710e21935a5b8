"""ImageNet, densenet121, Zipf's LS (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "densenet121", "zipf")
