"""CIFAR-100, CIFAR DenseNet121, label smoothing (eps 0.1) (docs/method.md section 6).

Votes (used by Zipf's LS only): the final 4x4 map, unresized (16 votes), as in the paper's
DenseNet121 numbers (the authors' DenseNet ignored their resize flag);
`--config.vote_upsample=2` votes on the x2 map instead.
"""
from experiments.configs import default


def get_config():
  return default.recipe("cifar100", "cifar_densenet121", "ls")
