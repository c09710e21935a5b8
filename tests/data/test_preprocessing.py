"""Augmentations against hand-computed cases and NumPy references."""
import numpy as np
import pytest
import tensorflow as tf

from zipfls_jax.data import pipeline
from zipfls_jax.data import preprocessing
from zipfls_jax.data import specs


def _seed(i):
  return tf.constant([7, i], tf.int64)


def _distinct_image(h, w, c=3):
  # Values 1.. so zero padding is distinguishable from image content.
  return (np.arange(h * w * c).reshape(h, w, c) + 1).astype(np.int32)


def _crop_offset(padded, crop):
  """(top, left) of `crop` inside `padded`, or None."""
  size = crop.shape[0]
  for top in range(padded.shape[0] - size + 1):
    for left in range(padded.shape[1] - size + 1):
      if np.array_equal(padded[top:top + size, left:left + size], crop):
        return top, left
  return None


def test_pad_random_crop_is_a_window_of_the_zero_padded_image():
  image = _distinct_image(32, 32)
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])  # zeros, like torchvision
  offsets = set()
  for i in range(150):
    crop = preprocessing.pad_random_crop(
        tf.constant(image), _seed(i), size=32, padding=4).numpy()
    assert crop.shape == (32, 32, 3)
    offset = _crop_offset(padded, crop)
    assert offset is not None and 0 <= min(offset) and max(offset) <= 8
    offsets.add(offset)
  # 150 uniform draws over 81 windows: all corners reachable, wide coverage.
  assert len(offsets) >= 55
  assert {o[0] for o in offsets} == set(range(9))


def test_random_flip_flips_left_right_or_not_at_all():
  image = tf.constant([[[1], [2], [3]]])
  outcomes = [preprocessing.random_flip(image, _seed(i)).numpy()[0, :, 0]
              .tolist() for i in range(64)]
  assert set(map(tuple, outcomes)) == {(1, 2, 3), (3, 2, 1)}
  assert 16 <= outcomes.count([3, 2, 1]) <= 48


@pytest.mark.parametrize("height,width", [(120, 90), (64, 64), (30, 200)])
def test_random_resized_crop_window_fits_and_respects_scale_and_ratio(
    height, width):
  for i in range(60):
    top, left, h, w = preprocessing.random_resized_crop_window(
        height, width, _seed(i)).numpy().tolist()
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    assert h >= 1 and w >= 1
    if (h, w) != (height, width):
      # Rounding h and w moves area and ratio by at most a pixel's worth.
      assert 0.08 * height * width - h - w - 1 <= h * w
      assert 3 / 4 - 1.5 / h <= w / h <= 4 / 3 + 1.5 / h


def test_random_resized_crop_window_fallbacks_by_hand():
  # No 10-attempt window fits a 1-pixel-high image: torchvision falls back to
  # the centre crop at the clamped ratio, w = round(1 * 4/3) = 1 at
  # left = (1000 - 1) // 2 = 499; symmetrically for a 1-pixel-wide image.
  wide = preprocessing.random_resized_crop_window(1, 1000, _seed(0)).numpy()
  tall = preprocessing.random_resized_crop_window(1000, 1, _seed(0)).numpy()
  assert wide.tolist() == [0, 499, 1, 1]
  assert tall.tolist() == [499, 0, 1, 1]


def test_center_crop_window_by_hand():
  # side = round(224/256 * min(h, w)), top = (h - side + 1) // 2.
  got = preprocessing.center_crop_window(256, 320, fraction=224 / 256)
  assert got.numpy().tolist() == [16, 48, 224, 224]
  got = preprocessing.center_crop_window(500, 375, fraction=224 / 256)
  assert got.numpy().tolist() == [86, 24, 328, 328]


def test_fused_decode_and_crop_equals_decode_then_crop():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
  window = tf.constant([3, 5, 20, 30])
  jpeg = tf.io.encode_jpeg(image)
  png = tf.io.encode_png(image)
  decoded_jpeg = tf.io.decode_jpeg(jpeg).numpy()
  np.testing.assert_array_equal(
      preprocessing.decode_and_crop(jpeg, window).numpy(),
      decoded_jpeg[3:23, 5:35])
  np.testing.assert_array_equal(
      preprocessing.decode_and_crop(png, window).numpy(), image[3:23, 5:35])
  for encoded in (jpeg, png):
    assert preprocessing.encoded_image_shape(encoded).numpy().tolist() == [
        37, 53]


def test_normalisation_by_hand():
  image = tf.constant([[[0], [255], [51]]], tf.uint8)
  got = preprocessing.to_normalized_float(image, (0.2,), (0.5,)).numpy()
  np.testing.assert_allclose(got[0, :, 0], [-0.4, 1.6, 0.0], atol=1e-6)
  assert got.dtype == np.float32


def _denormalize(image, spec):
  return (image * np.array(spec.std) + np.array(spec.mean)) * 255.0


def test_cifar_train_example_is_a_padded_crop_maybe_flipped():
  spec = specs.get_dataset_spec("cifar100")
  rng = np.random.default_rng(1)
  image = rng.integers(1, 256, size=(32, 32, 3), dtype=np.uint8)
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
  flips = 0
  for i in range(12):
    out = pipeline.train_preprocess(tf.constant(image), _seed(i), spec, 32)
    assert out.dtype == tf.float32 and out.shape == (32, 32, 3)
    pixels = np.round(_denormalize(out.numpy(), spec)).astype(np.int64)
    offset = _crop_offset(padded, pixels)
    if offset is None:
      offset = _crop_offset(padded, pixels[:, ::-1])
      flips += 1
    assert offset is not None
  assert 0 < flips < 12


def test_train_preprocessing_is_a_function_of_the_seed():
  spec = specs.get_dataset_spec("imagenet2012")
  rng = np.random.default_rng(2)
  jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8))
  a = pipeline.train_preprocess(jpeg, _seed(3), spec, 24).numpy()
  b = pipeline.train_preprocess(jpeg, _seed(3), spec, 24).numpy()
  c = pipeline.train_preprocess(jpeg, _seed(4), spec, 24).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert a.shape == (24, 24, 3)


def test_eval_is_deterministic_and_matches_numpy():
  cifar = specs.get_dataset_spec("cifar100")
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
  expected = (image / 255.0 - np.array(cifar.mean)) / np.array(cifar.std)
  for _ in range(2):
    got = pipeline.eval_preprocess(tf.constant(image), cifar, 32).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
  # Resize 256 + centre crop 224 of a flat grey image is flat grey; the crop
  # must not reach outside the image (no black border).
  imagenet = specs.get_dataset_spec("imagenet2012")
  grey = tf.io.encode_jpeg(np.full((300, 400, 3), 128, np.uint8), quality=100)
  first = pipeline.eval_preprocess(grey, imagenet, 224).numpy()
  second = pipeline.eval_preprocess(grey, imagenet, 224).numpy()
  np.testing.assert_array_equal(first, second)
  expected = (128 / 255.0 - np.array(imagenet.mean)) / np.array(imagenet.std)
  np.testing.assert_allclose(first, np.broadcast_to(expected, first.shape),
                             atol=1.5 / 255 / 0.224)
