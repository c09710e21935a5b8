"""ImageNet, densenet121, label smoothing (eps 0.1) (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("imagenet2012", "densenet121", "ls")
