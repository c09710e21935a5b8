"""Train and evaluation input pipelines for a data-parallel step.

Each process reads its own part of a split (`tfds.split_for_jax_process`)
and yields its share of the global batch as NumPy arrays, for
`jax.make_array_from_process_local_data`:

* training: infinite, shuffled deterministically from `seed`, augmented
  with stateless per-example seeds (so the stream is a pure function of the
  seed and the process), last partial batch of each pass dropped. For the
  self-distillation methods, `friends=k` orders it with the class-paired
  sampler instead (groups of k + 1 same-class rows, read by index from host
  memory or from array_record files, each row with its 'index'), and
  `views=2` adds a second augmentation of each example as 'image2';
* evaluation: one exact pass over the whole split. Every process yields the
  same number of batches; rows past its shard are padding with `mask`
  False, so `sum(mask)` over all processes and batches is the split size
  and each example is seen once.

TensorFlow runs on the host CPU only (see `sources`). This module does not
touch models or training.
"""
from __future__ import annotations

import atexit
import math
import os
import threading
from typing import Any, Iterable, Iterator, NamedTuple
import weakref

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from zipfls_jax.data import preprocessing
from zipfls_jax.data import samplers
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
          seed: int = 0, position_fn=None):
  """(image, label) pairs of `split`; JPEG sets keep the encoded bytes.

  With `position_fn` (see `_tfds_id_positions`), (image, label, index)
  triples: tfds tags each record with its file and record number, which
  `position_fn` turns into the example's position. The records and their
  order are the same either way.
  """
  decoders = {"image": tfds.decode.SkipDecoding()} if spec.jpeg else None
  try:
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders=tfds.decode.PartialDecoding(
            {"image": True, "label": True}, decoders=decoders
        ),
        read_config=tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True,
                                    add_tfds_id=position_fn is not None),
    )
  except AssertionError:  # tfds's "could not find data" check.
    if not builder.is_prepared():
      raise sources.missing_data_error(name, builder.data_dir_root) from None
    raise
  if position_fn is not None:
    return ds.map(
        lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32),
                    position_fn(ex["tfds_id"])),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
  return ds.map(
      lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
  )


def _tfds_id_positions(builder, split: str):
  """A function: a record's `tfds_id` -> its position in `split`, int32.

  A tfds_id is '<shard file>__<record number in that file>'; `split`'s file
  instructions say where each shard's records start in the split.
  """
  try:
    instructions = builder.info.splits[split].file_instructions
  except (KeyError, ValueError, TypeError):
    instructions = None   # split sizes unknown: tfds's mock_data
  if not instructions:
    # mock_data numbers the records of its one fake file from 0.
    return lambda tfds_id: tf.strings.to_number(
        tf.strings.regex_replace(tfds_id, r"^.*__", ""), tf.int32)
  files, shifts, start = [], [], 0
  for instruction in instructions:
    files.append(os.path.basename(instruction.filename))
    shifts.append(start - instruction.skip)
    start += instruction.take
  if len(set(files)) != len(files):
    raise ValueError(
        f"split {split!r} reads some shard files twice, so an example's"
        " position in it is ambiguous; with_index needs a split that reads"
        " each example once.")
  missing = -(2**31)
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(files), tf.constant(shifts, tf.int64)),
      default_value=missing)

  def position(tfds_id):
    file = tf.strings.regex_replace(
        tf.strings.regex_replace(tfds_id, r"__[0-9]+$", ""), r"^.*/", "")
    record = tf.strings.to_number(
        tf.strings.regex_replace(tfds_id, r"^.*__", ""), tf.int64)
    shift = table.lookup(file)
    tf.debugging.assert_greater(shift, tf.constant(missing, tf.int64),
                                message="a record from a file outside the split")
    return tf.cast(shift + record, tf.int32)

  return position


def _cpu_threads() -> int | None:
  """tf.data's thread count when the step also runs on this host's CPU.

  With JAX on the CPU, the input pipeline and the compiled step share the
  same cores, and tf.data's default pool (one thread per core) spends
  about as much CPU handing examples between its threads as on the
  examples (benchmarks/RESULTS.md, issue 14: 8.8 against 4.9 ms of CPU per
  Fashion-MNIST batch of 128 with one thread). An eighth of the cores, at
  least one, keeps up with any CPU step here (one thread: ~8,000
  images/s of Fashion-MNIST; the demo's step: ~1,800). With an
  accelerator, the step does not use the host's cores: None, TF's default.
  """
  if jax.default_backend() != "cpu":
    return None
  return max(1, (os.cpu_count() or 1) // 8)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  options.experimental_optimization.map_parallelization = True
  options.threading.max_intra_op_parallelism = 1
  threads = _cpu_threads()
  if threads is not None:
    options.threading.private_threadpool_size = threads
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
  float32. (The train pipeline runs the same two parts, `train_augment`
  per example and the normalisation once per batch.)
  """
  return normalize(train_augment(image, seed, spec, size), spec)


def normalize(images, spec: specs.DatasetSpec):
  """Pixels ([0, 255], any leading dims) -> the dataset's normalised float32."""
  return preprocessing.to_normalized_float(images, spec.mean, spec.std)


def train_augment(image, seed, spec: specs.DatasetSpec, size: int):
  """One training example's augmentation: (size, size, C) pixels in [0, 255].

  uint8, or float32 when the augmentation resized. Arguments as
  `train_preprocess`'s.
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
  image = normalize(image, spec)
  image.set_shape([size, size, spec.channels])
  return image


def _check_views(views) -> int:
  views = check_int("views", views, 1)
  if views > 2:
    raise ValueError(f"views must be 1 or 2, got {views}.")
  return views


def _check_groups(global_batch_size: int, local_batch: int, friends: int) -> None:
  """Refuses batches whose groups of friends + 1 would straddle devices."""
  group = friends + 1
  devices = jax.device_count()
  per_device = global_batch_size // devices
  if per_device % group or local_batch % group:
    raise ValueError(
        f"With friends={friends}, each device's rows must hold whole groups of"
        f" friends + 1 = {group} same-class examples: global_batch_size"
        f" {global_batch_size} over {devices} devices gives {per_device} per"
        f" device (and {local_batch} per process), not a multiple of {group}."
        f" Choose a global_batch_size that is a multiple of {group * devices}."
    )


def _second_view_seed(example_seed):
  """The seed of an example's second view: derived, distinct from the first."""
  return tf.random.experimental.stateless_fold_in(example_seed, 1)


def _augment_fn(spec, size, seed, process_index, process_count, views):
  """(stream position, image, label[, index]) -> the batch row's dict."""

  def augment(position, image, label, index=None):
    # A per-example seed unique over processes and epochs, from the
    # position in this process's stream: resuming recomputes it exactly.
    example_seed = tf.stack([
        tf.constant(int(seed), tf.int64),
        position * process_count + process_index,
    ])
    # Pixels here; `_normalize_batch` normalises a whole batch at once.
    row = {"image": train_augment(image, example_seed, spec, size),
           "label": label}
    if views == 2:
      row["image2"] = train_augment(
          image, _second_view_seed(example_seed), spec, size)
    if index is not None:
      row["index"] = index
    return row

  return augment


def _normalize_batch(spec):
  """Normalises a batch's images: one op per batch, not one per example.

  The same elementwise float32 arithmetic as per example, so the values are
  those of `train_preprocess`; the pipeline's CPU time per batch, which
  the step's shares on a CPU host, drops by about 7%.
  """

  def apply(batch):
    return {key: normalize(value, spec) if key in ("image", "image2") else value
            for key, value in batch.items()}

  return apply


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
    friends: int = 0,
    views: int = 1,
    with_index: bool = False,
) -> tf.data.Dataset:
  """This process's infinite stream of training batches, as a tf.data.Dataset.

  Batches are {'image': float32 (B, S, S, C), 'label': int32 (B,)} with
  B = global_batch_size // process_count and S = image_size (default: the
  dataset's). `split` is 'train' (the spec's training split) or any tfds
  split string. `process_index`/`process_count` default to JAX's.
  `start_step` > 0 starts at that batch of the very same stream (to resume
  a run exactly): with `friends=0` the examples before it still pass
  through the shuffle, which needs them, but are skipped before decoding
  and augmentation, the costly part; with `friends` > 0 the order of step
  `start_step` is computed directly.

  `friends` > 0 (CS-KD, BAKE) orders the examples with a
  `ClassPairedSampler`: rows come in consecutive groups of `friends + 1`
  examples of one class, every example of this process's part once per
  epoch, and batches also carry 'index': int32 (B,), each example's
  position in the split (the same on every epoch, process and resume).
  This needs random access by index: datasets whose spec has `cache`
  (CIFAR-100, Tiny ImageNet, Fashion-MNIST) read this process's part into
  host memory once; the others need data prepared in tfds's array_record
  format (`prepare_dataset(name, file_format="array_record")`). Groups
  never straddle devices: the per-device batch must be a multiple of
  `friends + 1`. `friends=0` is the plain shuffled stream.

  `views=2` (DDGSD) adds 'image2': float32 (B, S, S, C), a second,
  independent augmentation of the same example (its own stateless seed
  derived from the first view's); 'image' is then exactly the `views=1`
  image.

  `with_index=True` adds 'index' to the plain stream too (PS-KD's
  per-example store), from the record ids tfds reads along; the examples,
  their order and their images stay those of `with_index=False`.

  Raises:
    ValueError / TypeError: bad arguments (a batch that does not split into
      whole groups per device names global_batch_size, friends and the
      device count); with `friends` > 0, a dataset that has neither `cache`
      nor array_record data (before any image is read).
    FileNotFoundError: the dataset is not prepared.
  """
  spec, builder, process_index, process_count, local_batch, size = _setup(
      name, global_batch_size, data_dir, image_size, process_index,
      process_count)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"seed must be an int, got {type(seed).__name__}.")
  start_step = _check_non_negative_int("start_step", start_step)
  friends = _check_non_negative_int("friends", friends)
  views = _check_views(views)
  if not isinstance(with_index, bool):
    raise TypeError(
        f"with_index must be a bool, got {type(with_index).__name__}.")
  augment = _augment_fn(spec, size, seed, process_index, process_count, views)
  split = resolve_split(spec, split)
  if friends:
    _check_groups(global_batch_size, local_batch, friends)
    ds = _class_paired_stream(
        name, builder, spec, split, seed=seed, friends=friends,
        global_batch_size=global_batch_size, process_index=process_index,
        process_count=process_count, start_step=start_step)
    ds = ds.map(lambda position, example: augment(position, *example),
                num_parallel_calls=tf.data.AUTOTUNE)
  else:
    subsplit = tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count)
    # Different processes shuffle differently; all are fixed by `seed`.
    stream_seed = (int(seed) * 1_000_003 + process_index) % (2**31 - 1)
    ds = _read(name, builder, subsplit, spec=spec, shuffle_files=True,
               seed=stream_seed,
               position_fn=_tfds_id_positions(builder, split) if with_index
               else None)
    if spec.cache:
      ds = ds.cache()
    ds = ds.shuffle(spec.shuffle_buffer, seed=stream_seed,
                    reshuffle_each_iteration=True)
    # Augmentation seeds come from the enumeration index, so skipping after
    # `enumerate` leaves every later example exactly as it would have been.
    ds = ds.repeat().enumerate().skip(start_step * local_batch)
    ds = ds.map(lambda position, example: augment(position, *example),
                num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(_normalize_batch(spec), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


class _RandomAccess(NamedTuple):
  """This process's part of a split, readable by index.

  `labels` are the part's labels in tfds order; `fetch(indices)` returns the
  images of split indices (all within the part) as one NumPy array: decoded
  uint8 (n, H, W, C), or encoded bytes (n,) object for JPEG datasets.
  """
  split_size: int
  labels: np.ndarray
  fetch: Any
  image_signature: tf.TensorSpec


def _in_memory_part(name, builder, spec, split, process_index,
                    process_count) -> _RandomAccess:
  """Reads this process's part of `split` (tfds order) into host memory."""
  split_size = _shard_sizes(name, builder, spec, split, 1)[0]
  start, stop = samplers.process_part(split_size, process_index,
                                      process_count)
  if stop == start:
    raise ValueError(
        f"Split {split!r} has {split_size} examples: none for process"
        f" {process_index} of {process_count}.")
  subsplit = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count)
  ds = _read(name, builder, subsplit, spec=spec, shuffle_files=False)
  images = labels = None
  filled = 0
  for image, label in tfds.as_numpy(ds.batch(4096)):
    if images is None:   # preallocated: one copy of the part in memory
      images = np.empty((stop - start,) + image.shape[1:], image.dtype)
      labels = np.empty(stop - start, np.int32)
    if filled + len(label) > stop - start:
      filled += len(label)
      break
    images[filled:filled + len(label)] = image
    labels[filled:filled + len(label)] = label
    filled += len(label)
  if filled != stop - start:
    raise RuntimeError(
        f"Process {process_index} of {process_count} read {filled} examples of"
        f" split {split!r}, expected {stop - start} (examples [{start},"
        f" {stop}) of {split_size}).")

  def fetch(indices):
    return images[indices - start]

  return _RandomAccess(
      split_size, labels, fetch,
      tf.TensorSpec((None,) + images.shape[1:], tf.as_dtype(images.dtype)))


def _random_access_error(name, builder) -> ValueError:
  path = os.fspath(builder.data_path)
  return ValueError(
      f"friends > 0 reads examples by index, which needs random access:"
      f" dataset {name!r} is not held in memory (its spec has no `cache`) and"
      f" its copy in {path} has no array_record files (formats:"
      f" {sorted(f.value for f in builder.info.available_file_formats())})."
      f" Add them to this copy with tfds's `tfds convert_format"
      f" --dataset_version_dir={path} --out_file_format=array_record`, or"
      f" prepare a new copy with `python -m zipfls_jax.data.prepare"
      f" --dataset={name} --data_dir=NEW_DIR --file_format=array_record`"
      f" (`prepare_dataset({name!r}, data_dir=NEW_DIR,"
      f" file_format='array_record')`) and pass data_dir=NEW_DIR."
      f" friends=0 reads the data as it is."
  )


def check_random_access(name: str, *, friends: int, data_dir=None) -> None:
  """Raises what `friends` > 0 would raise for this dataset's data, reading none of it.

  The training loop calls it before it writes anything, so that a dataset
  prepared without random access (no array_record files) stops the run
  before its workdir exists.
  """
  if not friends:
    return
  spec = specs.get_dataset_spec(name)
  if spec.cache:
    return
  builder = sources.get_builder(name, data_dir)
  if not builder.is_prepared():
    raise sources.missing_data_error(name, builder.data_dir_root)
  formats = {f.value for f in builder.info.available_file_formats()}
  if "array_record" not in formats:
    raise _random_access_error(name, builder)


def _records(source, keys):
  """The records of `keys` in one batched read."""
  try:
    return source.__getitems__(keys)
  except TypeError:
    # tfds.testing.mock_data's source serves one key at a time only.
    return [source[k] for k in keys]


def _array_record_part(name, builder, spec, split, process_index,
                       process_count) -> _RandomAccess:
  """This process's part of `split` through tfds's random-access source.

  Only the labels are read up front (a pass over the part's records without
  decoding the images); images are read per batch.
  """
  decoders = {"image": tfds.decode.SkipDecoding()} if spec.jpeg else None
  try:
    source = builder.as_data_source(split=split, decoders=decoders)
  except (NotImplementedError, ValueError):
    # Raised before reading: no random-access format among the prepared ones.
    if not builder.is_prepared():
      raise sources.missing_data_error(name, builder.data_dir_root) from None
    raise _random_access_error(name, builder) from None
  split_size = len(source)
  start, stop = samplers.process_part(split_size, process_index,
                                      process_count)
  labels = np.empty(stop - start, np.int32)
  chunk = 4096
  for begin in range(start, stop, chunk):
    records = _records(source, list(range(begin, min(begin + chunk, stop))))
    labels[begin - start:begin - start + len(records)] = [
        r["label"] for r in records]

  def fetch(indices):
    records = _records(source, [int(i) for i in indices])
    if spec.jpeg:
      return np.array([r["image"] for r in records], dtype=object)
    return np.stack([r["image"] for r in records])

  if spec.jpeg:
    signature = tf.TensorSpec([None], tf.string)
  else:
    signature = tf.TensorSpec([None, None, None, spec.channels], tf.uint8)
  return _RandomAccess(split_size, labels, fetch, signature)


def _class_paired_stream(name, builder, spec, split, *, seed, friends,
                         global_batch_size, process_index, process_count,
                         start_step) -> tf.data.Dataset:
  """(stream position, (image, label, index)) in class-paired order.

  The sampler gives each step's split indices from the step alone, so the
  stream starts at `start_step` without touching earlier examples.
  """
  if spec.cache:
    part = _in_memory_part(name, builder, spec, split, process_index,
                           process_count)
  else:
    part = _array_record_part(name, builder, spec, split, process_index,
                              process_count)
  sampler = samplers.ClassPairedSampler(
      part.labels, global_batch_size=global_batch_size, friends=friends,
      seed=seed, process_index=process_index, process_count=process_count,
      split_size=part.split_size)
  local_batch = sampler.local_batch_size

  lock = threading.Lock()   # the sampler's epoch cache, if two iterators run

  def read_step(step):
    with lock:
      indices = sampler.batch_indices(int(step))
    return (part.fetch(indices), part.labels[indices - sampler.start],
            indices.astype(np.int32))

  def read(step):
    # A stateless Python call per step (not a generator, whose live
    # iterators TensorFlow cannot always finalise at interpreter exit).
    image, label, index = tf.numpy_function(
        read_step, [step], (part.image_signature.dtype, tf.int32, tf.int32),
        stateful=False)
    image.set_shape(part.image_signature.shape)
    label.set_shape([local_batch])
    index.set_shape([local_batch])
    return tf.data.Dataset.from_tensor_slices((image, label, index))

  # Steps one at a time: each step's read is already one batched access.
  steps = tf.data.Dataset.counter(start_step)
  examples = steps.flat_map(read)
  positions = tf.data.Dataset.counter(start_step * local_batch)
  return tf.data.Dataset.zip(positions, examples)


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
    friends: int = 0,
    views: int = 1,
    with_index: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
  """Infinite iterator of this process's training batches (NumPy dicts).

  See `train_dataset`; each dict is {'image': float32 (B, S, S, C)
  normalised, 'label': int32 (B,)} with B = global_batch_size //
  jax.process_count(), plus 'index': int32 (B,), the example's position in
  the split, when `friends` > 0 (rows in groups of `friends + 1` of one
  class) or `with_index`, and 'image2' when `views=2` (a second
  augmentation of each example). `start_step` resumes the stream at
  that batch.

  Raises:
    ValueError: unknown `name`, `global_batch_size` not divisible by the
      device count, or (with `friends` > 0) not into whole groups of
      `friends + 1` per device, or a dataset without random access.
    FileNotFoundError: the dataset is not prepared (says where to put it).
  """
  ds = train_dataset(
      name, global_batch_size=global_batch_size, seed=seed,
      data_dir=data_dir, image_size=image_size, split=split,
      start_step=start_step, friends=friends, views=views,
      with_index=with_index,
  )
  return _TrainIterator(ds)


# Train iterators not yet garbage-collected; closed before interpreter exit.
_LIVE_TRAIN_ITERATORS = weakref.WeakSet()


class _TrainIterator:
  """`iter(tfds.as_numpy(ds))`, closed by an `atexit` hook if still alive.

  The class-paired stream reads through a Python function inside tf.data.
  At interpreter exit Python threads can no longer take the GIL, so
  destroying a tf.data iterator whose background thread is about to call
  that function would wait forever: a run that ends with its train
  iterator still referenced (a module global, a traceback) would hang
  instead of exiting. Closing it while Python is still whole avoids that.
  """

  def __init__(self, ds: tf.data.Dataset):
    self._batches = iter(tfds.as_numpy(ds))
    _LIVE_TRAIN_ITERATORS.add(self)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._batches is None:
      raise StopIteration
    return next(self._batches)

  def close(self) -> None:
    """Releases the tf.data iterator; `next` then raises StopIteration."""
    batches, self._batches = self._batches, None
    if batches is not None:
      batches.close()


@atexit.register
def _close_live_train_iterators() -> None:
  for iterator in list(_LIVE_TRAIN_ITERATORS):
    iterator.close()


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
