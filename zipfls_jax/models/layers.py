"""Convolution and BatchNorm configured like PyTorch, and the input check.

Every model builds its layers from these two factories so that the PyTorch
conventions the reference relies on are stated once: bias-free convolutions
with explicit symmetric padding (PyTorch's `padding=k // 2`, which differs
from XLA's 'SAME' on strided layers), and BatchNorm with PyTorch's defaults
(running-average momentum 0.1, i.e. 0.9 in Flax terms, eps 1e-5). This module
holds no model logic.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax.numpy as jnp
from flax import linen as nn

Dtype = Any
# PyTorch's `momentum=0.1` weights the new batch; Flax's weights the old average.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def batch_norm(train: bool, *, dtype: Dtype, axis_name: Optional[str]) -> Callable[..., nn.Module]:
  """BatchNorm factory: batch statistics when `train`, running ones otherwise.

  `axis_name` averages the batch statistics over a `shard_map` / `pmap` axis
  (synchronised BN). Under plain `jax.jit` with a sharded global batch leave it
  None: the statistics are already global there. Statistics are reduced in
  float32 whatever `dtype` computes the normalised output; parameters and
  running averages are float32.
  """
  return functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
      axis_name=axis_name,
      # Two-pass variance, as PyTorch computes it; E[x^2] - E[x]^2 loses
      # precision for large activations, in bf16 above all.
      use_fast_variance=False)


def conv(features: int,
         kernel_size: int,
         *,
         strides: int = 1,
         groups: int = 1,
         dtype: Dtype,
         kernel_init: Callable,
         name: Optional[str] = None) -> nn.Conv:
  """A bias-free k x k convolution padded like PyTorch's `padding=k // 2`."""
  pad = kernel_size // 2
  return nn.Conv(
      features,
      (kernel_size, kernel_size),
      strides=(strides, strides),
      padding=((pad, pad), (pad, pad)),
      feature_group_count=groups,
      use_bias=False,
      dtype=dtype,
      kernel_init=kernel_init,
      name=name)


def max_pool_3x3_s2(x):
  """PyTorch's `MaxPool2d(3, stride=2, padding=1)` (pads with -inf)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def check_images(images) -> None:
  """Trace-time check that `images` is a float (N, H, W, C) batch."""
  shape = tuple(jnp.shape(images))
  if len(shape) != 4:
    raise ValueError(f"`images` must be a (N, H, W, C) batch, got shape {shape}.")
  dtype = jnp.result_type(images)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"`images` must be floating point (normalised pixels), got dtype {dtype}.")
