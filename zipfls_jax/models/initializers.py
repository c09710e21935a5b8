"""Initialisers that reproduce PyTorch's and torchvision's, in Flax terms.

The authors trained PyTorch models; matching their initial weight scales is
part of matching their recipes. Flax kernels are (..., fan_in, fan_out), and
`variance_scaling` counts the receptive field in both fans, exactly like
`torch.nn.init._calculate_fan_in_and_fan_out` (grouped convolutions included).
Nothing here draws numbers at import time.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

# torch.nn.Conv2d / nn.Linear default: kaiming_uniform_(a=sqrt(5)), i.e.
# U(-b, b) with b = sqrt(6 / ((1 + 5) * fan_in)) = 1 / sqrt(fan_in).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# torchvision ResNet / MobileNetV2: kaiming_normal_(mode='fan_out', nonlinearity='relu').
kaiming_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

# torchvision DenseNet: kaiming_normal_() with its defaults (fan_in, relu gain).
kaiming_normal_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def torch_default_bias(fan_in: int):
  """nn.Linear's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
