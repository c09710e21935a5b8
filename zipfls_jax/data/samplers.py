"""Class-paired example order for CS-KD and BAKE, as plain NumPy over labels.

CS-KD and BAKE need batches made of small groups of same-class images
(docs/method.md section 4). `ClassPairedSampler` gives the order in which to
read a training split so that they get them; it never reads images, so it
serves every dataset of the registry and any input pipeline that can read
an example by its index (an in-memory split, a tfds data source):

* every epoch visits each example of this process's part exactly once;
* within an epoch, each class's examples are shuffled and cut into groups
  of `friends + 1`; the groups come in rounds of distinct classes, chosen
  uniformly among the classes with groups left, each round filling the
  rest of a batch; a class's leftover examples (fewer than `friends + 1`)
  come last. These are the Zipf authors' FriendSampler semantics;
* every group starts at a stream position that is a multiple of
  `friends + 1`, so it lies inside one device's rows whenever the per-device
  batch is a multiple of `friends + 1` (rows 2i and 2i + 1 share a class
  for CS-KD with `friends=1`). To keep that across epoch boundaries, a few
  of the epoch's leftovers go first (or, if it has too few, one group is
  split into leftovers);
* per process, like `pipeline.train_dataset`: process p orders only its
  own contiguous part of the split, the part `tfds.split_for_jax_process`
  gives it (`process_part`), with its own random stream;
* the stream is infinite and continuous across epochs, like the plain
  train stream, and a pure function of (labels, seed, process): batch s is
  computed from s alone, so resuming at step s gives exactly the batches
  an uninterrupted run sees.

`pipeline.train_dataset(..., friends=k)` (and `create_train_iterator`) is
the pipeline built on it: it reads this process's part of the labels, asks
`batch_indices(step)` for each step, reads those examples by index (from
host memory or tfds's array_record source) and augments them with seeds
from the stream position. Any other reader works the same way
(`labels` being the split's labels in tfds order)::

    sampler = ClassPairedSampler(labels, global_batch_size=128, friends=1, seed=0)
    for indices in sampler.batches(start_step):
      batch = read_by_index(indices)   # rows 2i, 2i + 1 share a class

The example index travels with each row, which is also the stable index
PS-KD's per-example store needs. This module does not read data; it must
not import TensorFlow.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


def check_int(name: str, value, minimum: int) -> int:
  """`value` as an int >= `minimum`, else a TypeError/ValueError naming `name`.

  The data package's one integer-argument check (the pipelines use it too).
  """
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  return int(value)


def process_part(num_examples: int, process_index: int, process_count: int) -> tuple[int, int]:
  """[start, stop) of process `process_index`'s part of `num_examples` examples.

  The same contiguous, even split as `tfds.split_for_jax_process` (tfds's
  `even_splits` without dropping): the first `num_examples % process_count`
  parts hold one example more, e.g. 11 examples over 3 processes give 4, 4
  and 3.
  """
  num_examples = check_int("num_examples", num_examples, 0)
  process_count = check_int("process_count", process_count, 1)
  process_index = check_int("process_index", process_index, 0)
  if process_index >= process_count:
    raise ValueError(f"`process_index` must lie in [0, {process_count}), got {process_index}.")
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


class ClassPairedSampler:
  """This process's infinite, class-grouped order of a split's example indices.

  Args:
    labels: (N,) int labels of the whole split, in the reader's order; or,
      when `split_size` is given, only this process's part of them (the
      `process_part` of a split of `split_size` examples), which is all a
      process needs and all a per-process reader reads.
    global_batch_size: examples per step over all processes.
    friends: same-class examples that follow each anchor: groups have
      `friends + 1` examples (1 for CS-KD and BAKE on TinyImageNet and
      ImageNet, 3 for BAKE on CIFAR-100).
    seed: the run's seed; the order is a pure function of it.
    process_index, process_count: this process and the number of
      processes; default to JAX's.
    split_size: the number of examples of the whole split when `labels`
      holds only this process's part; None when `labels` is the whole split.

  Attributes:
    group_size: friends + 1.
    local_batch_size: global_batch_size // process_count.
    start, stop: this process's part [start, stop) of the split.

  Raises:
    ValueError / TypeError: bad arguments, or a local batch that is not a
      multiple of the group size (each process's batch must hold whole
      groups).
  """

  def __init__(self, labels, *, global_batch_size: int, friends: int = 1, seed: int = 0,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               split_size: Optional[int] = None):
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise TypeError(f"`labels` must be a 1-D integer array, got dtype {labels.dtype} and "
                      f"shape {labels.shape}.")
    if labels.size and labels.min() < 0:
      raise ValueError(f"`labels` must be >= 0, got {labels.min()}.")
    self.friends = check_int("friends", friends, 1)
    self.group_size = self.friends + 1
    self.seed = check_int("seed", seed, 0)
    if process_count is None or process_index is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_count = jax.process_count() if process_count is None else process_count
      process_index = jax.process_index() if process_index is None else process_index
    self.process_count = check_int("process_count", process_count, 1)
    self.process_index = check_int("process_index", process_index, 0)
    global_batch_size = check_int("global_batch_size", global_batch_size, 1)
    if global_batch_size % self.process_count:
      raise ValueError(f"`global_batch_size` {global_batch_size} must be divisible by the "
                       f"process count {self.process_count}.")
    self.local_batch_size = global_batch_size // self.process_count
    if self.local_batch_size % self.group_size:
      raise ValueError(
          f"The per-process batch {self.local_batch_size} (global_batch_size "
          f"{global_batch_size} / {self.process_count} processes) must be a multiple of "
          f"friends + 1 = {self.group_size}, so that every batch holds whole groups.")
    if split_size is None:
      self.start, self.stop = process_part(labels.size, self.process_index, self.process_count)
      local = labels[self.start:self.stop]
    else:
      split_size = check_int("split_size", split_size, 0)
      self.start, self.stop = process_part(split_size, self.process_index, self.process_count)
      if labels.size != self.stop - self.start:
        raise ValueError(
            f"`labels` must hold this process's part of the split ({self.stop - self.start} "
            f"examples: process {self.process_index} of {self.process_count}, split_size "
            f"{split_size}), got {labels.size}.")
      local = labels
    self.num_examples = self.stop - self.start
    if self.num_examples < self.group_size:
      raise ValueError(f"This process's part has {self.num_examples} examples, fewer than a "
                       f"group (friends + 1 = {self.group_size}).")
    # Examples of this part sorted by class (stable), and each class's span.
    self._by_class = np.argsort(local, kind="stable")
    _, self._class_sizes = np.unique(local, return_counts=True)
    self._class_starts = np.concatenate([[0], np.cumsum(self._class_sizes)[:-1]])
    self._cache: dict[int, np.ndarray] = {}   # the last epochs' orders

  def _rng(self, epoch: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, self.process_index, epoch])

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The (num_examples,) split indices of this process's epoch `epoch` >= 0.

    A permutation of [start, stop): each example exactly once.
    """
    epoch = check_int("epoch", epoch, 0)
    if epoch not in self._cache:
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      self._cache[epoch] = self._compute_epoch_order(epoch)
      self._cache[epoch].flags.writeable = False
    return self._cache[epoch]

  def _compute_epoch_order(self, epoch: int) -> np.ndarray:
    rng = self._rng(epoch)
    g, sizes = self.group_size, self._class_sizes
    # Shuffle within each class: a random key per example, sorted inside its class.
    keys = rng.random(self.num_examples)
    class_of = np.repeat(np.arange(sizes.size), sizes)
    within = np.lexsort((keys, class_of))            # class-major, random inside
    shuffled = self._by_class[within]
    num_groups = sizes // g
    # Groups of class c: shuffled[start_c + j g : start_c + (j + 1) g], j < num_groups[c];
    # the rest of each class is a leftover.
    in_group = (np.arange(self.num_examples) - np.repeat(self._class_starts, sizes)
                < np.repeat(num_groups * g, sizes))
    leftovers = list(rng.permutation(shuffled[~in_group]))
    # Align the first group of the epoch to a multiple of g in the stream.
    epoch_start = epoch * self.num_examples
    lead = -epoch_start % g
    if lead > len(leftovers):   # too few leftovers: split one group (of the largest class)
      c = int(np.argmax(num_groups))
      num_groups = num_groups.copy()
      num_groups[c] -= 1
      s = self._class_starts[c] + num_groups[c] * g
      leftovers = list(rng.permutation(np.concatenate([leftovers, shuffled[s:s + g]])))
    head, tail = leftovers[:lead], leftovers[lead:]
    # Rounds of distinct classes, each filling the rest of the current batch.
    slots = (self.local_batch_size - (epoch_start + lead) % self.local_batch_size) // g
    left = num_groups.copy()
    sequence = []
    while True:
      active = np.flatnonzero(left)
      if active.size == 0:
        break
      chosen = rng.permutation(active)[:slots]
      sequence.append(chosen)
      left[chosen] -= 1
      slots -= chosen.size
      if slots == 0:
        slots = self.local_batch_size // g
    classes = np.concatenate(sequence) if sequence else np.zeros(0, np.int64)
    # The k-th group of a class in the sequence is that class's k-th group.
    order = np.argsort(classes, kind="stable")
    occurrence = np.empty_like(classes)
    occurrence[order] = np.arange(classes.size) - np.repeat(
        np.concatenate([[0], np.cumsum(np.bincount(classes, minlength=sizes.size))[:-1]]),
        np.bincount(classes, minlength=sizes.size))
    first = self._class_starts[classes] + occurrence * g
    grouped = shuffled[(first[:, None] + np.arange(g)).reshape(-1)]
    local = np.concatenate([np.asarray(head, np.int64), grouped, np.asarray(tail, np.int64)])
    return (local + self.start).astype(np.int64)

  def batch_indices(self, step: int) -> np.ndarray:
    """The (local_batch_size,) split indices of this process's batch `step` >= 0."""
    step = check_int("step", step, 0)
    n, b = self.num_examples, self.local_batch_size
    begin = step * b
    pieces = []
    while b:
      epoch, offset = divmod(begin, n)
      take = min(b, n - offset)
      pieces.append(self.epoch_order(epoch)[offset:offset + take])
      begin += take
      b -= take
    return np.concatenate(pieces)

  def batches(self, start_step: int = 0) -> Iterator[np.ndarray]:
    """Batches `start_step`, `start_step + 1`, ... of this process, forever."""
    step = check_int("start_step", start_step, 0)
    while True:
      yield self.batch_indices(step)
      step += 1
