"""Train streams for self-distillation: class-paired rows (friends), two views.

The reference is the prepared split itself, read in tfds order with plain
tfds calls: each row's 'index' names the example, whose label and image the
rows must carry (the image as one of its pad-crop-flip augmentations,
enumerated in NumPy).
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import zipfls_jax.data as data
from zipfls_jax.data import pipeline
from zipfls_jax.data import samplers
from zipfls_jax.data import specs

from tests.data import conftest

SPEC = specs.get_dataset_spec("fashion_mnist")
GLOBAL_BATCH = 32          # 8 fake devices: 4 rows each; 2 processes: 16 rows each.
PROCESSES = 2
PART = conftest.NUM_TRAIN // PROCESSES   # 48 examples, 3 batches, per process


@pytest.fixture(scope="module")
def split(fashion_data_dir):
  """(images uint8 (N, 28, 28, 1), labels (N,)) of the train split, tfds order."""
  builder = tfds.builder("fashion_mnist", data_dir=fashion_data_dir)
  examples = list(tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False)))
  return (np.stack([e["image"] for e in examples]),
          np.array([e["label"] for e in examples]))


def _batches(data_dir, count, *, process_index=0, process_count=PROCESSES, **kwargs):
  kwargs.setdefault("global_batch_size", GLOBAL_BATCH)
  kwargs.setdefault("seed", 4)
  ds = pipeline.train_dataset("fashion_mnist", data_dir=data_dir, process_index=process_index,
                              process_count=process_count, **kwargs)
  return [b for _, b in zip(range(count), tfds.as_numpy(ds))]


def _augmentations(image):
  """All pad-4 crop-28 (x flip) augmentations of a uint8 image, normalised."""
  padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
  crops = [padded[i:i + 28, j:j + 28] for i in range(9) for j in range(9)]
  crops += [c[:, ::-1] for c in crops]
  crops = np.stack(crops).astype(np.float32) / np.float32(255)
  return (crops - np.float32(SPEC.mean[0])) / np.float32(SPEC.std[0])


def _is_augmentation_of(view, image):
  return bool(np.any(np.all(np.abs(_augmentations(image) - view) < 1e-5, axis=(1, 2, 3))))


@pytest.mark.parametrize("friends", [1, 3])
def test_groups_share_a_label_and_an_epoch_visits_each_example_once(
    fashion_data_dir, split, friends):
  images, labels = split
  g = friends + 1
  seen = []
  for process in range(PROCESSES):
    epoch = _batches(fashion_data_dir, PART // 16, process_index=process, friends=friends)
    index = np.concatenate([b["index"] for b in epoch])
    label = np.concatenate([b["label"] for b in epoch])
    assert all(b["index"].dtype == np.int32 and b["label"].dtype == np.int32 for b in epoch)
    # This process's epoch: its own contiguous half, every example once.
    start = process * PART
    np.testing.assert_array_equal(np.sort(index), np.arange(start, start + PART))
    np.testing.assert_array_equal(label, labels[index])
    # Epoch 0 starts aligned: first every class's whole groups, then leftovers.
    counts = np.bincount(labels[start:start + PART], minlength=10)
    grouped = int(np.sum(counts // g)) * g
    groups = label[:grouped].reshape(-1, g)
    assert np.all(groups == groups[:, :1])
    np.testing.assert_array_equal(np.bincount(label[grouped:], minlength=10),
                                  np.bincount(labels[start:start + PART], minlength=10) % g)
    seen.append(index)
    # The images are augmentations of the examples 'index' names.
    for row in range(0, 16, 3):
      assert _is_augmentation_of(epoch[1]["image"][row], images[epoch[1]["index"][row]])
  np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(conftest.NUM_TRAIN))


def test_friends_follow_the_sampler(fashion_data_dir, split):
  _, labels = split
  sampler = samplers.ClassPairedSampler(labels, global_batch_size=GLOBAL_BATCH, friends=1,
                                        seed=4, process_index=1, process_count=PROCESSES)
  for step, batch in enumerate(_batches(fashion_data_dir, 5, process_index=1, friends=1)):
    np.testing.assert_array_equal(batch["index"], sampler.batch_indices(step))


def test_resume_at_step_s_gives_identical_batches(fashion_data_dir):
  # 3 batches per epoch: steps 4-6 lie in the second and third epochs.
  full = _batches(fashion_data_dir, 7, friends=1, views=2)
  resumed = _batches(fashion_data_dir, 3, friends=1, views=2, start_step=4)
  for x, y in zip(full[4:], resumed):
    assert set(x) == set(y) == {"image", "image2", "label", "index"}
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(full[0]["index"], full[3]["index"])   # reshuffled epoch


def test_two_views_are_two_augmentations_of_the_same_example(fashion_data_dir, split):
  images, _ = split
  one = _batches(fashion_data_dir, 2, friends=1)
  two = _batches(fashion_data_dir, 2, friends=1, views=2)
  differ = 0
  for x, y in zip(one, two):
    # The first view is the one-view stream's image; labels and indices as well.
    for key in ("image", "label", "index"):
      np.testing.assert_array_equal(x[key], y[key])
    for row in range(16):
      original = images[y["index"][row]]
      assert _is_augmentation_of(y["image2"][row], original)
      differ += not np.array_equal(y["image"][row], y["image2"][row])
  # Same crop and flip for both views has probability 1/162 per row.
  assert differ >= 28, differ


def _plain_stream_reference(data_dir, *, seed, process_index, process_count, start_step):
  """The plain train stream as built before friends/views, from its parts."""
  spec = SPEC
  builder = data.get_builder("fashion_mnist", data_dir)
  subsplit = tfds.split_for_jax_process("train", process_index=process_index,
                                        process_count=process_count)
  stream_seed = (seed * 1_000_003 + process_index) % (2**31 - 1)
  ds = pipeline._read("fashion_mnist", builder, subsplit, spec=spec, shuffle_files=True,
                      seed=stream_seed).cache()
  ds = ds.shuffle(spec.shuffle_buffer, seed=stream_seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate().skip(start_step * 16)

  def augment(index, example):
    seed_ = tf.stack([tf.constant(seed, tf.int64), index * process_count + process_index])
    return {"image": pipeline.train_preprocess(example[0], seed_, spec, 28),
            "label": example[1]}

  ds = ds.map(augment).batch(16, drop_remainder=True)
  return [b for _, b in zip(range(4), tfds.as_numpy(ds))]


@pytest.mark.parametrize("start_step", [0, 2])
def test_plain_stream_is_unchanged_and_its_first_view_too(fashion_data_dir, start_step):
  reference = _plain_stream_reference(fashion_data_dir, seed=6, process_index=1,
                                      process_count=PROCESSES, start_step=start_step)
  plain = _batches(fashion_data_dir, 4, process_index=1, seed=6, start_step=start_step)
  two = _batches(fashion_data_dir, 4, process_index=1, seed=6, start_step=start_step,
                 views=2)
  for ref, x, y in zip(reference, plain, two):
    assert set(x) == {"image", "label"} and set(y) == {"image", "image2", "label"}
    for key in ("image", "label"):
      np.testing.assert_array_equal(x[key], ref[key])
      np.testing.assert_array_equal(y[key], ref[key])
    assert np.mean(np.any(y["image"] != y["image2"], axis=(1, 2, 3))) > 0.8


@pytest.fixture(scope="module")
def array_record_dir(tmp_path_factory, fashion_data_dir):
  """The same synthetic Fashion-MNIST, prepared in tfds's array_record format."""
  root = tmp_path_factory.mktemp("fashion_array_record")
  idx_dir = conftest.write_fashion_idx(root / "idx")
  data.prepare_fashion_mnist(str(root / "tfds"), idx_dir=str(idx_dir),
                             file_format="array_record")
  return str(root / "tfds")


def test_random_access_source_gives_the_in_memory_stream(
    fashion_data_dir, array_record_dir, monkeypatch):
  in_memory = _batches(fashion_data_dir, 4, friends=1, views=2)
  # A spec without `cache`, as ImageNet's: read by index from array_record.
  monkeypatch.setitem(specs._SPECS, "fashion_mnist", dataclasses.replace(SPEC, cache=False))
  from_source = _batches(array_record_dir, 4, friends=1, views=2)
  for x, y in zip(in_memory, from_source):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  # Without array_record data it is refused before any example is read.
  monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset",
                      lambda *a, **k: pytest.fail("read data"))
  with pytest.raises(ValueError) as error:
    pipeline.train_dataset("fashion_mnist", global_batch_size=GLOBAL_BATCH,
                           data_dir=fashion_data_dir, friends=1)
  message = str(error.value)
  for needle in ("friends > 0", "array_record", "tfds convert_format",
                 "--file_format=array_record", fashion_data_dir, "friends=0"):
    assert needle in message, needle
  # The training loop's check before it writes anything says the same, and
  # passes array_record data and the plain stream.
  with pytest.raises(ValueError) as early:
    pipeline.check_random_access("fashion_mnist", friends=1, data_dir=fashion_data_dir)
  assert str(early.value) == message
  pipeline.check_random_access("fashion_mnist", friends=1, data_dir=array_record_dir)
  pipeline.check_random_access("fashion_mnist", friends=0, data_dir=fashion_data_dir)


def test_preparing_in_another_format_is_refused(fashion_data_dir):
  with pytest.raises(ValueError, match="already prepared .* as \\['tfrecord'\\]"):
    data.prepare_fashion_mnist(fashion_data_dir, file_format="array_record")


@pytest.mark.parametrize("name", specs.DATASET_NAMES)
def test_every_dataset_gives_pairs_and_two_views_under_mock_data(name):
  spec = data.get_dataset_spec(name)
  size = 16   # small, to keep the test quick; the augmentations still crop and flip
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    train = data.create_train_iterator(name, global_batch_size=16, seed=0, friends=1,
                                       views=2, image_size=size)
    batches = [next(train) for _ in range(2)]
    train.close()
    plain = data.create_train_iterator(name, global_batch_size=16, seed=0, views=2,
                                       with_index=True, image_size=size)
    batches.append(next(plain))
    plain.close()
  for batch in batches:
    assert set(batch) == {"image", "image2", "label", "index"}
    for key in ("image", "image2"):
      assert batch[key].shape == (16, size, size, spec.channels)
      assert batch[key].dtype == np.float32 and np.all(np.isfinite(batch[key]))
    assert np.mean(np.any(batch["image"] != batch["image2"], axis=(1, 2, 3))) > 0.8
    assert np.all((batch["index"] >= 0) & (batch["index"] < 12))
    assert np.all((batch["label"] >= 0) & (batch["label"] < spec.num_classes))
  # 12 examples, batches of 16: the first 12 rows are one epoch.
  np.testing.assert_array_equal(np.sort(batches[0]["index"][:12]), np.arange(12))


@pytest.mark.parametrize("kwargs,match", [
    # 8 devices: 3 rows each.
    (dict(global_batch_size=24, friends=1),
     r"friends \+ 1 = 2.*global_batch_size 24 over 8 devices gives 3 per device"),
    (dict(global_batch_size=16, friends=3),
     r"friends=3.*global_batch_size 16 over 8 devices gives 2 per device"),
    (dict(global_batch_size=16, views=3), "views must be 1 or 2, got 3"),
    (dict(global_batch_size=16, friends=-1), "friends must be >= 0, got -1"),
])
def test_bad_arguments_are_refused_before_reading(tmp_path, kwargs, match):
  # An empty data dir: refusing before reading means no FileNotFoundError.
  with pytest.raises(ValueError, match=match):
    data.create_train_iterator("cifar100", data_dir=str(tmp_path), **kwargs)
  with pytest.raises(TypeError, match="friends must be an int"):
    data.create_train_iterator("cifar100", global_batch_size=16, friends=1.0,
                               data_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar100", "imagenet2012"])
def test_missing_data_with_friends_says_where_to_put_it(tmp_path, name):
  with pytest.raises(FileNotFoundError, match="is not prepared in"):
    data.create_train_iterator(name, global_batch_size=16, friends=1,
                               data_dir=str(tmp_path))


def test_live_train_iterators_are_closed_before_the_interpreter_exits(fashion_data_dir):
  # tf.data calls Python to read each class-paired step; an iterator still
  # referenced when the interpreter shuts down could deadlock its exit (seen
  # by hand: a script ending with a live one hung in about half the runs).
  # The atexit hook closes every live one while Python is still whole.
  train = data.create_train_iterator("fashion_mnist", global_batch_size=16,
                                     data_dir=fashion_data_dir, friends=1)
  assert next(train)["index"].shape == (16,)
  assert train in pipeline._LIVE_TRAIN_ITERATORS
  pipeline._close_live_train_iterators()
  with pytest.raises(StopIteration):
    next(train)


def test_with_index_names_the_plain_stream_examples_without_changing_them(
    fashion_data_dir, split):
  images, labels = split
  plain = _batches(fashion_data_dir, 4, process_index=1, seed=8)
  indexed = _batches(fashion_data_dir, 4, process_index=1, seed=8, with_index=True)
  for x, y in zip(plain, indexed):
    assert set(y) == {"image", "label", "index"} and y["index"].dtype == np.int32
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
    np.testing.assert_array_equal(y["label"], labels[y["index"]])
  for row in range(0, 16, 4):
    assert _is_augmentation_of(indexed[0]["image"][row], images[indexed[0]["index"][row]])
  # Process 1's pass is its half of the split, each example once.
  first_pass = np.concatenate([b["index"] for b in indexed[:3]])
  np.testing.assert_array_equal(np.sort(first_pass), np.arange(PART, 2 * PART))


def test_with_index_counts_positions_within_a_sliced_or_joined_split(fashion_data_dir, split):
  _, train_labels = split
  builder = tfds.builder("fashion_mnist", data_dir=fashion_data_dir)
  test_labels = np.array([e["label"] for e in tfds.as_numpy(
      builder.as_dataset(split="test[:8]", shuffle_files=False))])
  # Positions 0-7: train examples 88-95; positions 8-15: test examples 0-7.
  expected = np.concatenate([train_labels[88:], test_labels])
  (batch,) = _batches(fashion_data_dir, 1, process_index=0, process_count=1,
                      global_batch_size=16, split="train[88:]+test[:8]", with_index=True)
  np.testing.assert_array_equal(np.sort(batch["index"]), np.arange(16))
  np.testing.assert_array_equal(batch["label"], expected[batch["index"]])
