"""Convolution and BatchNorm configured like PyTorch, and the input check.

Every model builds its layers from these two factories so that the PyTorch
conventions the reference relies on are stated once: bias-free convolutions
with explicit symmetric padding (PyTorch's `padding=k // 2`, which differs
from XLA's 'SAME' on strided layers), and BatchNorm as PyTorch's
`BatchNorm2d` (running-average momentum 0.1, i.e. 0.9 in Flax terms, eps
1e-5, and a running variance of unbiased batch variances). This module holds
no model logic.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any
# PyTorch's `momentum=0.1` weights the new batch; Flax's weights the old average.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class BatchNorm(nn.Module):
  """`torch.nn.BatchNorm2d` over the last axis, with Flax's variable names.

  Train mode normalises with the batch's mean and biased variance, as both
  frameworks do. The running variance then follows PyTorch, not Flax: it
  averages the *unbiased* batch variance, var * n / (n - 1), where n is the
  number of values per channel the statistics were taken over:

  * plain `jax.jit` (a global batch, sharded or not): the global batch's
    N * H * W;
  * with `axis_name` (synchronised BN under `shard_map` / `pmap`): the
    per-device N * H * W times the axis size, the global count again;
  * per-device BN (`axis_name=None` inside `shard_map` / `pmap`): the
    device's own N * H * W, as in PyTorch's per-GPU BatchNorm. The training
    step then averages the devices' running statistics, so the running
    variance is the mean of the per-device unbiased estimates.

  Like PyTorch, training with n = 1 is refused (the unbiased variance is
  undefined). Initialisation (`init`) never updates the running averages.
  Statistics are reduced in float32 whatever `dtype` (the output's dtype);
  parameters and running averages are float32.

  Attributes:
    use_running_average: normalise with the running statistics (eval mode).
    momentum: weight of the old running average (Flax's convention; PyTorch's
      `momentum=0.1` is 0.9 here).
    epsilon: added to the variance.
    dtype: output dtype.
    axis_name: `shard_map` / `pmap` axis to average the batch statistics over.
    scale_init, bias_init: initialisers of `scale` (PyTorch's `weight`) and
      `bias`.
  """
  use_running_average: bool
  momentum: float = BN_MOMENTUM
  epsilon: float = BN_EPSILON
  dtype: Dtype = jnp.float32
  axis_name: Optional[str] = None
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
    ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
    scale = self.param("scale", self.scale_init, (features,), jnp.float32)
    bias = self.param("bias", self.bias_init, (features,), jnp.float32)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      count = math.prod(x.shape[:-1])
      # At init the axis may not exist yet (flax's rule too).
      axis_name = None if self.is_initializing() else self.axis_name
      mean = x32.mean(axes)
      if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
        count *= jax.lax.psum(1, axis_name)  # a Python int: the axis size
      # Two passes, as PyTorch: E[x^2] - E[x]^2 loses precision for large
      # activations, in bf16 above all.
      var = jnp.square(x32 - mean).mean(axes)
      if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
      if not self.is_initializing():
        if count < 2:
          raise ValueError(
              f"BatchNorm in train mode needs more than 1 value per channel, got an input of "
              f"shape {tuple(x.shape)} (PyTorch refuses it too: the unbiased variance of the "
              "running average is undefined).")
        ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
        unbiased = var * (count / (count - 1))
        ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * unbiased
    y = (x32 - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype)


def batch_norm(train: bool, *, dtype: Dtype, axis_name: Optional[str]) -> Callable[..., nn.Module]:
  """`BatchNorm` factory: batch statistics when `train`, running ones otherwise.

  `axis_name` averages the batch statistics over a `shard_map` / `pmap` axis
  (synchronised BN). Under plain `jax.jit` with a sharded global batch leave it
  None: the statistics are already global there.
  """
  return functools.partial(BatchNorm, use_running_average=not train, dtype=dtype,
                           axis_name=axis_name)


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
