"""Train and evaluation input pipelines for a data-parallel step.

Each process reads its own part of a split (`tfds.split_for_jax_process`)
and yields its share of the global batch as NumPy arrays, for
`jax.make_array_from_process_local_data`:

* training: infinite, shuffled deterministically from `seed`, augmented
  with stateless per-example seeds (so the stream is a pure function of the
  seed and the process), last partial batch of each pass dropped;
* evaluation: one exact pass over the whole split. Every process yields the
  same number of batches; rows past its shard are padding with `mask`
  False, so `sum(mask)` over all processes and batches is the split size
  and each example is seen once.

TensorFlow runs on the host CPU only (see `sources`). This module does not
touch models or training.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, NamedTuple

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from zipfls_jax.data import preprocessing
from zipfls_jax.data import sources
from zipfls_jax.data import specs
from zipfls_jax.data.samplers import check_int




def _check_positive_int(name: str, value) -> int:
  return check_int(name, value, 1)


def _check_non_negative_int(name: str, value) -> int:
  return check_int(name, value, 0)


def _local_batch_size(global_batch_size, process_count: int) -> int:
  global_batch_size = _check_positive_int(
      "global_batch_size", global_batch_size
  )
  devices = jax.device_count()
  if global_batch_size % devices or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size must be divisible by the device count"
        f" ({devices}) and the process count ({process_count}); got"
        f" {global_batch_size}."
    )
  return global_batch_size // process_count


def _processes(process_index, process_count) -> tuple[int, int]:
  if process_count is None:
    process_count = jax.process_count()
  if process_index is None:
    process_index = jax.process_index()
  process_count = _check_positive_int("process_count", process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must lie in [0, {process_count}), got {process_index}."
    )
  return int(process_index), process_count


class _Setup(NamedTuple):
  """What both pipelines derive from their arguments, checked."""
  spec: specs.DatasetSpec
  builder: Any
  process_index: int
  process_count: int
  local_batch: int
  size: int


def _setup(name, global_batch_size, data_dir, image_size, process_index,
           process_count) -> _Setup:
  spec = specs.get_dataset_spec(name)
  process_index, process_count = _processes(process_index, process_count)
  local_batch = _local_batch_size(global_batch_size, process_count)
  size = _check_positive_int("image_size", image_size or spec.image_size)
  return _Setup(spec, sources.get_builder(name, data_dir), process_index,
                process_count, local_batch, size)


def resolve_split(spec: specs.DatasetSpec, split: str) -> str:
  """'train'/'eval' -> the spec's tfds split; a tfds split name as is."""
  return {"train": spec.train_split, "eval": spec.eval_split}.get(split, split)


def _read(name, builder, split, *, spec, shuffle_files: bool = False,
          seed: int = 0):
  """(image, label) pairs of `split`; JPEG sets keep the encoded bytes."""
  decoders = {"image": tfds.decode.SkipDecoding()} if spec.jpeg else None
  try:
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders=tfds.decode.PartialDecoding(
            {"image": True, "label": True}, decoders=decoders
        ),
        read_config=tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True),
    )
  except AssertionError:  # tfds's "could not find data" check.
    if not builder.is_prepared():
      raise sources.missing_data_error(name, builder.data_dir_root) from None
    raise
  return ds.map(
      lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
  )


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  options.threading.max_intra_op_parallelism = 1
  return options


def _crop_window(image, spec: specs.DatasetSpec, window_fn):
  """The `window_fn(height, width)` window of an example's image, uint8.

  JPEG datasets keep encoded bytes: the size comes from the header and only
  the window is decoded. Others arrive decoded and are sliced.
  """
  if spec.jpeg:
    height, width = tf.unstack(
        preprocessing.encoded_image_shape(image, channels=spec.channels)
    )
    return preprocessing.decode_and_crop(
        image, window_fn(height, width), channels=spec.channels
    )
  shape = tf.shape(image)
  return preprocessing.crop(image, window_fn(shape[0], shape[1]))


def train_preprocess(image, seed, spec: specs.DatasetSpec, size: int):
  """One training example: the dataset's augmentation, then normalisation.

  `image` is decoded uint8 (H, W, C), or the encoded bytes when
  `spec.jpeg`; `seed` a shape [2] int tensor. Returns (size, size, C)
  float32.
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2)
  )
  if spec.train_augmentation == specs.PAD_CROP_FLIP:
    if image.shape[0] != size or image.shape[1] != size:
      image = preprocessing.resize(image, size)
    image = preprocessing.pad_random_crop(
        image, crop_seed, size=size, padding=spec.padding
    )
  elif spec.train_augmentation == specs.RANDOM_RESIZED_CROP_FLIP:
    image = _crop_window(
        image, spec,
        lambda h, w: preprocessing.random_resized_crop_window(h, w, crop_seed))
    image = preprocessing.resize(image, size)
  else:
    raise ValueError(f"Unknown augmentation {spec.train_augmentation!r}.")
  image = preprocessing.random_flip(image, flip_seed)
  image = preprocessing.to_normalized_float(image, spec.mean, spec.std)
  image.set_shape([size, size, spec.channels])
  return image


def eval_preprocess(image, spec: specs.DatasetSpec, size: int):
  """One evaluation example, deterministic: resize/crop, normalise."""
  if spec.eval_preprocessing == specs.EVAL_RESIZE_CENTER_CROP:
    image = _crop_window(
        image, spec,
        lambda h, w: preprocessing.center_crop_window(
            h, w, fraction=spec.eval_crop_fraction))
    image = preprocessing.resize(image, size)
  elif spec.eval_preprocessing == specs.EVAL_RESIZE:
    image = preprocessing.resize(image, size)
  elif spec.eval_preprocessing == specs.EVAL_AS_IS:
    if image.shape[0] != size or image.shape[1] != size:
      image = preprocessing.resize(image, size)
  else:
    raise ValueError(f"Unknown eval preprocessing {spec.eval_preprocessing!r}.")
  image = preprocessing.to_normalized_float(image, spec.mean, spec.std)
  image.set_shape([size, size, spec.channels])
  return image


def train_dataset(
    name: str,
    *,
    global_batch_size: int,
    seed: int = 0,
    data_dir=None,
    image_size: int | None = None,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    start_step: int = 0,
) -> tf.data.Dataset:
  """This process's infinite stream of training batches, as a tf.data.Dataset.

  Batches are {'image': float32 (B, S, S, C), 'label': int32 (B,)} with
  B = global_batch_size // process_count and S = image_size (default: the
  dataset's). `split` is 'train' (the spec's training split) or any tfds
  split string. `process_index`/`process_count` default to JAX's.
  `start_step` > 0 starts at that batch of the very same stream (to resume
  a run exactly): the examples before it still pass through the shuffle,
  which needs them, but are skipped before decoding and augmentation, the
  costly part.
  """
  spec, builder, process_index, process_count, local_batch, size = _setup(
      name, global_batch_size, data_dir, image_size, process_index,
      process_count)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
  subsplit = tfds.split_for_jax_process(
      resolve_split(spec, split),
      process_index=process_index,
      process_count=process_count,
  )
  # Different processes shuffle differently; all are fixed by `seed`.
  stream_seed = (int(seed) * 1_000_003 + process_index) % (2**31 - 1)
  ds = _read(name, builder, subsplit, spec=spec, shuffle_files=True,
             seed=stream_seed)
  if spec.cache:
    ds = ds.cache()
  ds = ds.shuffle(spec.shuffle_buffer, seed=stream_seed,
                  reshuffle_each_iteration=True)
  start_step = _check_non_negative_int("start_step", start_step)
  # Augmentation seeds come from the enumeration index, so skipping after
  # `enumerate` leaves every later example exactly as it would have been.
  ds = ds.repeat().enumerate().skip(start_step * local_batch)

  def augment(index, example):
    image, label = example
    # A per-example seed unique over processes and epochs.
    example_seed = tf.stack([
        tf.constant(int(seed), tf.int64),
        index * process_count + process_index,
    ])
    return {"image": train_preprocess(image, example_seed, spec, size),
            "label": label}

  ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _shard_sizes(name, builder, spec, split: str,
                 process_count: int) -> list[int]:
  """Examples in each process's part of `split`, in process order."""
  sizes = []
  for index in range(process_count):
    subsplit = tfds.split_for_jax_process(
        split, process_index=index, process_count=process_count
    )
    try:
      sizes.append(int(builder.info.splits[subsplit].num_examples))
    except (KeyError, ValueError, TypeError):
      # Split sizes unknown (tfds's mock_data with metadata from code):
      # count what the reader yields.
      sizes.append(int(_read(name, builder, subsplit, spec=spec)
                       .cardinality().numpy()))
  if min(sizes) < 0:
    raise ValueError(f"Cannot count the examples of split {split!r}.")
  return sizes


def eval_dataset(
    name: str,
    *,
    global_batch_size: int,
    data_dir=None,
    image_size: int | None = None,
    split: str = "eval",
    process_index: int | None = None,
    process_count: int | None = None,
) -> tuple[tf.data.Dataset, int]:
  """This process's padded, masked pass over a whole split.

  Returns the dataset and its number of batches (the same on every
  process). Batches are {'image': float32 (B, S, S, C), 'label': int32
  (B,), 'mask': bool (B,)}; padding rows have image 0, label 0, mask False.
  """
  spec, builder, process_index, process_count, local_batch, size = _setup(
      name, global_batch_size, data_dir, image_size, process_index,
      process_count)
  split = resolve_split(spec, split)
  sizes = _shard_sizes(name, builder, spec, split, process_count)
  num_batches = math.ceil(max(sizes) / local_batch)
  ds = _read(name, builder, tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count),
      spec=spec)
  ds = ds.map(
      lambda image, label: {
          "image": eval_preprocess(image, spec, size),
          "label": label,
          "mask": tf.constant(True),
      },
      num_parallel_calls=tf.data.AUTOTUNE,
  )
  padding = tf.data.Dataset.from_tensors({
      "image": tf.zeros([size, size, spec.channels], tf.float32),
      "label": tf.constant(0, tf.int32),
      "mask": tf.constant(False),
  }).repeat(num_batches * local_batch - sizes[process_index])
  ds = ds.concatenate(padding).batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options()), num_batches


def create_train_iterator(
    name: str,
    *,
    global_batch_size: int,
    seed: int = 0,
    data_dir=None,
    image_size: int | None = None,
    split: str = "train",
    start_step: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches (NumPy dicts).

  See `train_dataset`; each dict is {'image': float32 (B, S, S, C)
  normalised, 'label': int32 (B,)} with B = global_batch_size //
  jax.process_count(). `start_step` resumes the stream at that batch.

  Raises:
    ValueError: unknown `name`, or `global_batch_size` not divisible by
      the device count.
    FileNotFoundError: the dataset is not prepared (says where to put it).
  """
  ds = train_dataset(
      name, global_batch_size=global_batch_size, seed=seed,
      data_dir=data_dir, image_size=image_size, split=split,
      start_step=start_step,
  )
  return iter(tfds.as_numpy(ds))


def create_eval_iterator(
    name: str,
    *,
    global_batch_size: int,
    data_dir=None,
    image_size: int | None = None,
    split: str = "eval",
) -> Iterable[dict[str, np.ndarray]]:
  """Exact passes over the evaluation split (NumPy dicts with 'mask').

  Every `for` over the result (every `iter()`) is one new exact pass, so a
  training loop builds it once and evaluates many times. Every process
  yields the same number of batches; summing `mask` over batches and
  processes counts each example of the split exactly once. See
  `eval_dataset`.
  """
  ds, _ = eval_dataset(
      name, global_batch_size=global_batch_size, data_dir=data_dir,
      image_size=image_size, split=split,
  )
  return tfds.as_numpy(ds)


def num_examples(name: str, split: str, data_dir=None) -> int:
  """Examples in `split` ('train', 'eval' or a tfds split) of a prepared set."""
  spec = specs.get_dataset_spec(name)
  builder = sources.get_builder(name, data_dir)
  return _shard_sizes(name, builder, spec, resolve_split(spec, split), 1)[0]
