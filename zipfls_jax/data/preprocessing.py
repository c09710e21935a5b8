"""Per-example image operations of the input pipelines, in TensorFlow.

Everything random here is stateless: it takes an explicit `seed` (a shape
[2] integer tensor) and is a pure function of it, so a pipeline is
reproducible from its seed whatever the parallelism. The recipes match
torchvision's transforms as the authors used them (docs/method.md section 6); the
large datasets decode only the JPEG window they keep. No batching, no
dataset reading here.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from zipfls_jax.data import tensorflow_setup  # noqa: F401  (hides GPUs from TF)


def to_normalized_float(image, mean: Sequence[float], std: Sequence[float]):
  """uint8 or [0, 255] float pixels -> (pixels / 255 - mean) / std, float32."""
  image = tf.cast(image, tf.float32) / 255.0
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (image - mean) / std


def resize(image, size: int):
  """Bilinear resize to size x size, antialiased like PIL's; float32 out."""
  image = tf.image.resize(
      tf.cast(image, tf.float32), (size, size), method="bilinear",
      antialias=True,
  )
  return tf.clip_by_value(image, 0.0, 255.0)


def pad_random_crop(image, seed, *, size: int, padding: int):
  """torchvision `RandomCrop(size, padding)`: zero-pad, crop uniformly.

  The top-left corner is uniform over all size x size windows of the padded
  image (offsets 0 .. H + 2 * padding - size inclusive).
  """
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  shape = tf.shape(padded)
  limits = tf.stack([shape[0] - size + 1, shape[1] - size + 1])
  offsets = tf.random.stateless_uniform(
      [2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32
  ) % limits
  return tf.slice(padded, [offsets[0], offsets[1], 0], [size, size, -1])


def random_flip(image, seed):
  """Left-right flip with probability 1/2."""
  flip = tf.random.stateless_uniform([], seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)


def random_resized_crop_window(
    height,
    width,
    seed,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
):
  """torchvision `RandomResizedCrop.get_params`: (top, left, h, w) int32.

  Up to `attempts` draws of an area fraction in `scale` and a log-uniform
  aspect ratio in `ratio`; the first window that fits is placed uniformly.
  If none fits, the whole image centre-cropped to the nearest allowed
  aspect ratio.
  """
  h = tf.cast(height, tf.float32)
  w = tf.cast(width, tf.float32)
  draws = tf.random.stateless_uniform([attempts, 4], seed)
  area = h * w * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  aspect = tf.exp(log_lo + (log_hi - log_lo) * draws[:, 1])
  crop_w = tf.round(tf.sqrt(area * aspect))
  crop_h = tf.round(tf.sqrt(area / aspect))
  fits = (crop_w > 0) & (crop_w <= w) & (crop_h > 0) & (crop_h <= h)
  first = tf.argmax(tf.cast(fits, tf.int32))
  top = tf.floor(draws[first, 2] * (h - crop_h[first] + 1))
  left = tf.floor(draws[first, 3] * (w - crop_w[first] + 1))
  sampled = tf.stack([top, left, crop_h[first], crop_w[first]])

  in_ratio = w / h
  fallback_w = tf.where(
      in_ratio > ratio[1], tf.round(h * ratio[1]), w
  )
  fallback_h = tf.where(
      in_ratio < ratio[0], tf.round(w / ratio[0]), h
  )
  fallback = tf.stack([
      tf.floor((h - fallback_h) / 2), tf.floor((w - fallback_w) / 2),
      fallback_h, fallback_w,
  ])
  window = tf.where(tf.reduce_any(fits), sampled, fallback)
  return tf.cast(window, tf.int32)


def center_crop_window(height, width, *, fraction: float):
  """Centred square (top, left, side, side) of side fraction * min(h, w).

  With fraction 224/256 this is torchvision's Resize(256) + CenterCrop(224)
  expressed in the original image's coordinates.
  """
  side = tf.cast(
      tf.round(fraction * tf.cast(tf.minimum(height, width), tf.float32)),
      tf.int32,
  )
  side = tf.maximum(side, 1)
  top = (height - side + 1) // 2
  left = (width - side + 1) // 2
  return tf.stack([top, left, side, side])


def crop(image, window):
  """The (top, left, h, w) window of a decoded image."""
  return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], -1])


def encoded_image_shape(image_bytes, *, channels: int = 3):
  """(height, width) of an encoded image; reads only the header of JPEGs."""
  return tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.image.extract_jpeg_shape(image_bytes)[:2],
      lambda: tf.shape(_decode(image_bytes, channels))[:2],
  )


def decode_and_crop(image_bytes, window, *, channels: int = 3):
  """Decodes only `window` of a JPEG (fused); other formats decode, then crop."""
  return tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.image.decode_and_crop_jpeg(
          image_bytes, window, channels=channels
      ),
      lambda: crop(_decode(image_bytes, channels), window),
  )


def _decode(image_bytes, channels):
  image = tf.io.decode_image(
      image_bytes, channels=channels, expand_animations=False
  )
  image.set_shape([None, None, channels])
  return image
