"""iNat21 mini, resnet50, cross-entropy (SPEC 6)."""
from experiments.configs import default


def get_config():
  return default.recipe("i_naturalist2021", "resnet50", "ce")
