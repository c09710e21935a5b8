"""Pipelines: shapes under tfds mock data, exact evaluation, determinism, errors."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

import zipfls_jax.data as data
from zipfls_jax.data import pipeline
from zipfls_jax.data import specs

from tests.data import conftest

GLOBAL_BATCH = 8  # conftest fakes 8 devices.


@pytest.mark.parametrize("name", specs.DATASET_NAMES)
def test_every_dataset_yields_batches_under_mock_data(name):
  spec = data.get_dataset_spec(name)
  size = spec.image_size
  with tfds.testing.mock_data(num_examples=10,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    train = data.create_train_iterator(name, global_batch_size=GLOBAL_BATCH,
                                       seed=0)
    batches = [next(train) for _ in range(2)]
    evals = list(data.create_eval_iterator(name,
                                           global_batch_size=GLOBAL_BATCH))
  for batch in batches:
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (GLOBAL_BATCH, size, size, spec.channels)
  for batch in evals:
    assert set(batch) == {"image", "label", "mask"}
    assert batch["image"].shape == (GLOBAL_BATCH, size, size, spec.channels)
    assert batch["mask"].dtype == np.bool_
  for batch in batches + evals:
    assert batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32
    assert np.all(np.isfinite(batch["image"]))
    assert np.all((batch["label"] >= 0) & (batch["label"] < spec.num_classes))
  # 10 examples in batches of 8: 2 batches, 6 padding rows masked out.
  assert len(evals) == 2
  assert sum(int(b["mask"].sum()) for b in evals) == 10


def _recover_index(images, spec):
  pixels = np.round((images[..., 0] * spec.std[0] + spec.mean[0]) * 255)
  return (pixels[:, 0, 0] * 256 + pixels[:, 0, 1]).astype(np.int64)


@pytest.mark.parametrize("process_count", [1, 3])
def test_eval_visits_each_example_exactly_once(fashion_data_dir, process_count):
  # 10,000 examples, global batch 768: 10,000 = 13 * 768 + 16.
  spec = data.get_dataset_spec("fashion_mnist")
  local_batch = 768 // process_count
  seen, num_batches = [], set()
  for index in range(process_count):
    ds, steps = pipeline.eval_dataset(
        "fashion_mnist", global_batch_size=768, data_dir=fashion_data_dir,
        process_index=index, process_count=process_count)
    batches = list(tfds.as_numpy(ds))
    assert len(batches) == steps
    num_batches.add(steps)
    for batch in batches:
      assert batch["image"].shape == (local_batch, 28, 28, 1)
      mask = batch["mask"]
      # Padding comes last and is zero.
      assert not np.any(mask[np.argmin(mask):]) or mask.all()
      assert np.all(batch["image"][~mask] == 0)
      indices = _recover_index(batch["image"][mask], spec)
      np.testing.assert_array_equal(batch["label"][mask], indices % 10)
      seen.extend(indices.tolist())
  assert len(num_batches) == 1  # Same number of batches on every process.
  assert len(seen) == conftest.NUM_TEST
  np.testing.assert_array_equal(np.sort(seen), np.arange(conftest.NUM_TEST))
  assert num_batches.pop() == -(-(-(-conftest.NUM_TEST // process_count))
                                // local_batch)


def test_train_stream_is_determined_by_the_seed(fashion_data_dir):
  def first_batches(seed, process_index=0):
    ds = pipeline.train_dataset(
        "fashion_mnist", global_batch_size=32, seed=seed,
        data_dir=fashion_data_dir, process_index=process_index,
        process_count=2)
    return [b for _, b in zip(range(4), tfds.as_numpy(ds))]

  a, b, c = first_batches(0), first_batches(0), first_batches(1)
  other_process = first_batches(0, process_index=1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a[0]["image"], c[0]["image"])
  assert not np.array_equal(a[0]["image"], other_process[0]["image"])
  # 48 examples per process, local batch 16: 3 batches per pass, and the
  # fourth batch starts a reshuffled second pass.
  assert a[0]["image"].shape == (16, 28, 28, 1)
  assert not np.array_equal(a[0]["label"], a[3]["label"])
  # Each pass is the process's own half of the split: the two first passes
  # together hold every training label exactly as often as the data does.
  labels = np.concatenate([x["label"] for x in a[:3] + other_process[:3]])
  np.testing.assert_array_equal(
      np.bincount(labels, minlength=10),
      np.bincount(np.arange(conftest.NUM_TRAIN) % 10, minlength=10))


def test_a_cpu_step_gets_a_small_tf_data_pool_and_an_accelerator_tf_datas_default(
    fashion_data_dir, monkeypatch):
  # With JAX on the CPU the pipeline shares the cores with the step: a pool
  # of an eighth of them (one here). With an accelerator: unset, TF's default.
  def pool(name):
    train = pipeline.train_dataset("fashion_mnist", global_batch_size=16,
                                   data_dir=fashion_data_dir)
    evaluation, _ = pipeline.eval_dataset("fashion_mnist", global_batch_size=16,
                                          data_dir=fashion_data_dir)
    sizes = {ds.options().threading.private_threadpool_size for ds in (train, evaluation)}
    assert len(sizes) == 1, (name, sizes)
    return sizes.pop()

  import os  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(os, "cpu_count", lambda: 2)
  assert pool("cpu, 2 cores") == 1
  monkeypatch.setattr(os, "cpu_count", lambda: 64)
  assert pool("cpu, 64 cores") == 8
  monkeypatch.setattr(pipeline.jax, "default_backend", lambda: "gpu")
  assert pool("gpu") is None


def test_start_step_resumes_the_same_stream(fashion_data_dir):
  def batches(start_step, count):
    ds = pipeline.train_dataset(
        "fashion_mnist", global_batch_size=32, seed=3,
        data_dir=fashion_data_dir, process_index=0, process_count=2,
        start_step=start_step)
    return [b for _, b in zip(range(count), tfds.as_numpy(ds))]

  full = batches(0, 5)
  # Steps 2-4 cross into the reshuffled second pass (3 batches per pass).
  for x, y in zip(full[2:], batches(2, 3)):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  with pytest.raises(ValueError, match="start_step must be >= 0"):
    pipeline.train_dataset("fashion_mnist", global_batch_size=32,
                           data_dir=fashion_data_dir, start_step=-1)


def test_train_pass_covers_the_process_shard(fashion_data_dir):
  # Whole shard per pass: each label appears as often as in the data.
  ds = pipeline.train_dataset(
      "fashion_mnist", global_batch_size=conftest.NUM_TRAIN, seed=5,
      data_dir=fashion_data_dir, process_index=0, process_count=1)
  batch = next(iter(tfds.as_numpy(ds)))
  np.testing.assert_array_equal(
      np.bincount(batch["label"], minlength=10),
      np.bincount(np.arange(conftest.NUM_TRAIN) % 10, minlength=10))


def test_num_examples(fashion_data_dir):
  assert data.num_examples("fashion_mnist", "train", fashion_data_dir) == (
      conftest.NUM_TRAIN)
  assert data.num_examples("fashion_mnist", "eval", fashion_data_dir) == (
      conftest.NUM_TEST)
  assert data.num_examples("fashion_mnist", "test", fashion_data_dir) == (
      conftest.NUM_TEST)


def test_batch_size_must_divide_over_devices(fashion_data_dir):
  with pytest.raises(ValueError, match=r"divisible by the device count \(8\)"):
    data.create_train_iterator("fashion_mnist", global_batch_size=12,
                               data_dir=fashion_data_dir)
  with pytest.raises(ValueError, match="global_batch_size must be >= 1"):
    data.create_eval_iterator("fashion_mnist", global_batch_size=0,
                              data_dir=fashion_data_dir)


def test_unknown_dataset_name():
  with pytest.raises(ValueError, match="Unknown dataset name 'mnist'"):
    data.create_train_iterator("mnist", global_batch_size=8)


@pytest.mark.parametrize("name,needle", [
    ("cifar100", "internet"),
    ("fashion_mnist", "dataset-fashion-mnist"),
    ("tiny_imagenet", "val_annotations.txt"),
    ("imagenet2012", "ILSVRC2012_img_train.tar"),
    ("i_naturalist2021", "train_mini.json.tar.gz"),
])
def test_missing_data_says_where_to_put_it(tmp_path, name, needle):
  with pytest.raises(FileNotFoundError) as error:
    data.create_eval_iterator(name, global_batch_size=8, data_dir=str(tmp_path))
  message = str(error.value)
  assert needle in message and str(tmp_path) in message
  if name in ("tiny_imagenet", "imagenet2012", "i_naturalist2021"):
    assert str(tmp_path / "downloads" / "manual") in message


def test_prepare_without_manual_files_or_internet_fails_fast(tmp_path):
  with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_val.tar"):
    data.prepare_dataset("imagenet2012", data_dir=str(tmp_path))
