"""TinyImageNet, CIFAR DenseNet121, Zipf's LS (docs/method.md section 6).

Votes: the final 4x4 map, unresized (16 votes), as in the paper's
DenseNet121 numbers (the authors' DenseNet ignored their resize flag);
`--config.vote_upsample=2` votes on the x2 map instead.
"""
from experiments.configs import default


def get_config():
  return default.recipe("tiny_imagenet", "cifar_densenet121", "zipf")
