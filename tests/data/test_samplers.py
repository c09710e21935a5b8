"""The class-paired sampler: groups share a class, epochs cover, resume, hosts."""
import numpy as np
import pytest

from zipfls_jax.data.samplers import ClassPairedSampler, process_part


def _labels(counts, seed=0):
  """A split with `counts[c]` examples of class c, in a random order."""
  labels = np.repeat(np.arange(len(counts)), counts)
  return np.random.default_rng(seed).permutation(labels).astype(np.int32)


def _stream(sampler, num_steps, start_step=0):
  batches = sampler.batches(start_step)
  return np.concatenate([next(batches) for _ in range(num_steps)])


def test_each_group_shares_a_class_and_leftovers_come_last():
  counts = [9, 12, 8, 10, 7, 12]            # leftovers with groups of 3: 0, 0, 2, 1, 1, 0
  labels = _labels(counts)
  sampler = ClassPairedSampler(labels, global_batch_size=6, friends=2, seed=1,
                               process_index=0, process_count=1)
  order = sampler.epoch_order(0)
  num_groups = sum(c // 3 for c in counts)
  groups = labels[order[:3 * num_groups]].reshape(-1, 3)
  assert np.all(groups == groups[:, :1])
  np.testing.assert_array_equal(np.sort(labels[order[3 * num_groups:]]), [2, 2, 3, 4])


@pytest.mark.parametrize("counts,friends,batch", [
    ([11, 10, 10, 10, 10, 10, 10, 10, 10, 10], 1, 8),   # 101 examples: odd epochs start odd
    ([13, 9, 10, 11, 7], 3, 8),                         # groups of 4, few leftovers
])
def test_groups_stay_aligned_across_epochs(counts, friends, batch):
  labels = _labels(counts, seed=2)
  g = friends + 1
  sampler = ClassPairedSampler(labels, global_batch_size=batch, friends=friends, seed=3,
                               process_index=0, process_count=1)
  n = len(labels)
  stream = _stream(sampler, num_steps=4 * n // batch)
  groups = labels[stream[:len(stream) // g * g]].reshape(-1, g)
  same = np.all(groups == groups[:, :1], axis=1)
  # Per epoch every group but at most one split one (and the tuples that
  # straddle leftovers) is aligned on a multiple of g: count them.
  per_epoch = sum(c // g for c in counts) - 1
  assert same.sum() >= 3 * per_epoch, (same.sum(), per_epoch)


def test_an_epoch_visits_every_example_exactly_once():
  labels = _labels([30, 25, 41, 17], seed=4)
  sampler = ClassPairedSampler(labels, global_batch_size=10, friends=1, seed=5,
                               process_index=0, process_count=1)
  n = len(labels)
  for epoch in range(3):
    np.testing.assert_array_equal(np.sort(sampler.epoch_order(epoch)), np.arange(n))
  stream = _stream(sampler, num_steps=3 * n // 10 + 1)
  for epoch in range(3):   # the stream is the epochs one after the other
    np.testing.assert_array_equal(np.sort(stream[epoch * n:(epoch + 1) * n]), np.arange(n))
  assert not np.array_equal(sampler.epoch_order(0), sampler.epoch_order(1))   # reshuffled


def test_batches_of_distinct_classes_while_classes_last():
  labels = _labels([40] * 10, seed=6)
  sampler = ClassPairedSampler(labels, global_batch_size=8, friends=1, seed=7,
                               process_index=0, process_count=1)
  for step in range(20):   # 80 of 200 groups drawn: every class still has groups left
    batch = labels[sampler.batch_indices(step)].reshape(4, 2)
    assert np.all(batch[:, 0] == batch[:, 1])
    assert len(set(batch[:, 0])) == 4, batch


@pytest.mark.parametrize("start_step", [1, 7, 23])
def test_resume_at_step_s_gives_the_same_batches(start_step):
  labels = _labels([15, 22, 9, 31], seed=8)
  kwargs = dict(global_batch_size=6, friends=1, seed=9, process_index=0, process_count=1)
  uninterrupted = _stream(ClassPairedSampler(labels, **kwargs), start_step + 12)
  resumed = _stream(ClassPairedSampler(labels, **kwargs), 12, start_step=start_step)
  np.testing.assert_array_equal(resumed, uninterrupted[start_step * 6:])


def test_same_seed_same_order_other_seed_other_order():
  labels = _labels([20, 20, 20], seed=10)
  make = lambda seed: ClassPairedSampler(labels, global_batch_size=4, seed=seed,
                                         process_index=0, process_count=1).epoch_order(0)
  np.testing.assert_array_equal(make(1), make(1))
  assert not np.array_equal(make(1), make(2))


def test_per_host_parts_are_disjoint_cover_and_match_tfds_even_splits():
  # tfds.even_splits' documented case: 11 examples over 3 processes -> 4, 4, 3.
  assert [process_part(11, p, 3) for p in range(3)] == [(0, 4), (4, 8), (8, 11)]
  labels = _labels([23, 31, 18, 27], seed=11)
  parts = []
  for p in range(3):
    sampler = ClassPairedSampler(labels, global_batch_size=12, friends=1, seed=12,
                                 process_index=p, process_count=3)
    assert sampler.local_batch_size == 4
    order = sampler.epoch_order(0)
    assert np.all((order >= sampler.start) & (order < sampler.stop))
    groups = labels[order[:len(order) // 2 * 2]].reshape(-1, 2)
    assert np.mean(groups[:, 0] == groups[:, 1]) > 0.9
    parts.append(order)
  np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
  # Processes draw from their own streams.
  other = ClassPairedSampler(labels, global_batch_size=12, seed=12, process_index=1,
                             process_count=3)
  np.testing.assert_array_equal(other.batch_indices(3), other.batch_indices(3))


@pytest.mark.parametrize("kwargs,error,match", [
    ({"global_batch_size": 7}, ValueError, "multiple of friends"),
    ({"global_batch_size": 8, "friends": 0}, ValueError, "friends"),
    ({"global_batch_size": 8, "process_count": 3}, ValueError, "process count"),
    ({"global_batch_size": 8.0}, TypeError, "global_batch_size"),
    ({"global_batch_size": 8, "process_index": 2, "process_count": 2}, ValueError,
     "process_index"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
  kwargs = {"process_index": 0, "process_count": 1, **kwargs}
  with pytest.raises(error, match=match):
    ClassPairedSampler(_labels([4, 4]), **kwargs)
  with pytest.raises(TypeError, match="labels"):
    ClassPairedSampler(np.zeros(4, np.float32), global_batch_size=2, process_index=0,
                       process_count=1)


def test_plugs_into_a_tf_data_pipeline():
  tf = pytest.importorskip("tensorflow")
  labels = _labels([6, 10, 8], seed=13)
  images = np.arange(len(labels), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  sampler = ClassPairedSampler(labels, global_batch_size=4, friends=1, seed=14,
                               process_index=0, process_count=1)
  order = tf.data.Dataset.from_generator(
      lambda: sampler.batches(2), output_signature=tf.TensorSpec([4], tf.int64))
  ds = order.unbatch().map(lambda i: {"image": tf.gather(images, i),
                                      "label": tf.gather(labels, i), "index": i}).batch(4)
  for step, batch in zip(range(2, 5), ds.as_numpy_iterator()):
    np.testing.assert_array_equal(batch["index"], sampler.batch_indices(step))
    np.testing.assert_array_equal(batch["image"][:, 0], batch["index"])
    np.testing.assert_array_equal(batch["label"], labels[batch["index"]])


def test_a_process_part_of_the_labels_gives_the_same_order():
  labels = _labels([14, 9, 21, 12], seed=15)
  for p in range(3):
    whole = ClassPairedSampler(labels, global_batch_size=6, friends=1, seed=16,
                               process_index=p, process_count=3)
    part = ClassPairedSampler(labels[whole.start:whole.stop], global_batch_size=6, friends=1,
                              seed=16, process_index=p, process_count=3,
                              split_size=len(labels))
    assert (part.start, part.stop) == (whole.start, whole.stop)
    for step in (0, 5, 11):
      np.testing.assert_array_equal(part.batch_indices(step), whole.batch_indices(step))
  with pytest.raises(ValueError, match="this process's part of the split \\(19 examples"):
    ClassPairedSampler(labels, global_batch_size=6, seed=16, process_index=0, process_count=3,
                       split_size=len(labels))
