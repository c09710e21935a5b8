"""Dense votes: the classifier head applied at every position of a feature map.

docs/method.md section 1.1. Each spatial position of the last feature map (optionally
resized x2 bilinearly) is classified by the model's own head and casts one
vote for its argmax class. The module is pure JAX; it must never materialise
an N x positions x C float array when that would be large (iNat: 32 x 196 x
10,000), so the head is applied in row blocks with a running argmax.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from zipfls_jax import validation

# Largest logits block (rows x classes) computed at once: 2**22 floats = 16 MiB.
DEFAULT_BLOCK_ELEMENTS = 2 ** 22


def upsample_bilinear(feature_map: jax.Array, factor: int) -> jax.Array:
  """Resizes (N, H, W, D) by an integer factor with half-pixel centres.

  Matches PyTorch `F.interpolate(mode='bilinear', align_corners=False)` for
  upscaling (edge pixels clamp), which is how the authors vote.
  """
  n, h, w, d = feature_map.shape
  return jax.image.resize(feature_map, (n, h * factor, w * factor, d), method="bilinear")


def dense_votes(feature_map: jax.Array,
                kernel: jax.Array,
                bias: Optional[jax.Array] = None,
                *,
                upsample: Optional[int] = None,
                block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> jax.Array:
  """Per-position argmax class of a linear head over a feature map.

  votes[n, p] = argmax_c (F[n, p] @ kernel + bias)[c], p over the H' x W'
  positions in row-major order, where F is `feature_map`, resized x`upsample`
  bilinearly first when asked. Ties go to the lowest class id.

  Args:
    feature_map: (N, H, W, D) float features (the map before global pooling).
    kernel: (D, C) classifier kernel, the one that makes the pooled logits.
    bias: optional (C,) classifier bias.
    upsample: None, or an integer factor >= 2 for a bilinear resize
      (half-pixel centres, PyTorch `align_corners=False`) before voting.
    block_elements: largest rows x C logits block held at once; larger
      problems are voted in row blocks with `lax.map`, so memory stays
      bounded at any N, H, W and C.

  Returns:
    (N, H' * W') int32 class ids, with no gradient.

  Example:
    >>> import jax.numpy as jnp
    >>> fmap = jnp.zeros((2, 4, 4, 8)).at[..., 0].set(1.0)
    >>> kernel = jnp.eye(8, 3)
    >>> dense_votes(fmap, kernel, upsample=2).shape
    (2, 64)
  """
  validation.check_float("feature_map", feature_map)
  validation.check_float("kernel", kernel)
  if feature_map.ndim != 4:
    raise ValueError(
        f"`feature_map` must be (N, H, W, D), got shape {tuple(feature_map.shape)}.")
  if kernel.ndim != 2 or kernel.shape[0] != feature_map.shape[-1]:
    raise ValueError(
        f"`kernel` must be (D, C) with D = {feature_map.shape[-1]} (the feature map's "
        f"channels), got shape {tuple(kernel.shape)}.")
  num_classes = kernel.shape[1]
  if bias is not None and tuple(jnp.shape(bias)) != (num_classes,):
    raise ValueError(f"`bias` must have shape ({num_classes},), got {tuple(jnp.shape(bias))}.")
  if upsample is not None and (not isinstance(upsample, int) or upsample < 1):
    raise ValueError(f"`upsample` must be None or an integer factor >= 1, got {upsample!r}.")

  feature_map = jax.lax.stop_gradient(feature_map)
  kernel = jax.lax.stop_gradient(kernel)
  if upsample is not None and upsample > 1:
    feature_map = upsample_bilinear(feature_map, upsample)
  n, h, w, d = feature_map.shape
  rows = feature_map.reshape(n * h * w, d)
  if bias is None:
    bias = jnp.zeros((num_classes,), jnp.float32)
  bias = jax.lax.stop_gradient(bias).astype(jnp.float32)

  def vote(block):
    logits = jnp.dot(block, kernel.astype(block.dtype), preferred_element_type=jnp.float32)
    return jnp.argmax(logits + bias, axis=-1).astype(jnp.int32)

  total = rows.shape[0]
  block_rows = max(1, block_elements // num_classes)
  if total <= block_rows:
    ids = vote(rows)
  else:
    num_blocks = math.ceil(total / block_rows)
    padded = jnp.pad(rows, ((0, num_blocks * block_rows - total), (0, 0)))
    ids = jax.lax.map(vote, padded.reshape(num_blocks, block_rows, d)).reshape(-1)[:total]
  return ids.reshape(n, h * w)
