"""Checkpoints on disk: damaged files, a flipped bit, a failed save, the checksum.

Real files, damaged the ways storage and kills damage them; the state is a
small `TrainState` (no model), so each case costs about a second.
"""
import asyncio
import gc
import logging
import os
import resource
import shutil
import signal
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training.state import TrainState


def make_state(value):
  return TrainState(
      step=jnp.int32(value),
      params={"w": jax.random.normal(jax.random.key(value), (256, 256)) + value,
              "b": jnp.arange(5, dtype=jnp.bfloat16)},
      batch_stats={"mean": jnp.full((3,), value, jnp.float32)}, opt_state=(),
      rng=jax.random.key(value))


def saved(directory, steps=(1, 2)):
  checkpoints = checkpoint_lib.Checkpoints(str(directory), every_steps=1, max_to_keep=3)
  for step in steps:
    checkpoints.save(step, make_state(step), {"best_top1": float(step)})
  checkpoints.close()
  return checkpoint_lib.Checkpoints(str(directory), every_steps=1, max_to_keep=3)


def data_files(step_dir):
  return sorted((f for f in (step_dir / "state").rglob("*") if f.is_file()
                 and f.parent.name == "d"), key=lambda f: f.stat().st_size)


def truncate(step_dir):
  for f in data_files(step_dir):
    os.truncate(f, f.stat().st_size // 2)


def zero(step_dir):
  for f in data_files(step_dir):
    f.write_bytes(bytes(f.stat().st_size))


def delete_manifest(step_dir):
  (step_dir / "state" / "manifest.ocdbt").unlink()


def empty_state(step_dir):
  shutil.rmtree(step_dir / "state")
  (step_dir / "state").mkdir()


def empty_step(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


def garbage_progress(step_dir):
  for f in (step_dir / "progress").iterdir():
    f.write_text("{not json")


def flip_one_bit(step_dir):
  # The largest data file holds `w`; one bit in the middle of it.
  f = data_files(step_dir)[-1]
  raw = bytearray(f.read_bytes())
  raw[len(raw) // 2] ^= 0x04
  f.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [truncate, zero, delete_manifest, empty_state, empty_step,
                                    garbage_progress, flip_one_bit])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
  checkpoints = saved(tmp_path)
  damage(tmp_path / "2")
  with caplog.at_level(logging.WARNING):
    step, state, progress = checkpoints.restore(make_state(0))
  assert step == 1 and progress == {"best_top1": 1.0}
  np.testing.assert_array_equal(jax.random.key_data(state.rng),
                                jax.random.key_data(make_state(1).rng))
  np.testing.assert_array_equal(state.params["w"], make_state(1).params["w"])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  # One line naming the bad step (and, for the flipped bit, the checksum).
  assert any("step 2" in w and "cannot be restored" in w and "\n" not in w for w in warnings)
  if damage is flip_one_bit:
    assert any("checksum" in w for w in warnings), warnings
  # The damaged step is set aside, so that step can be saved again.
  assert checkpoints.all_steps() == [1] and (tmp_path / "damaged-2").is_dir()
  checkpoints.save(2, make_state(2), {"best_top1": 2.0})
  assert checkpoints.restore(make_state(0))[0] == 2
  checkpoints.close()


def test_restores_into_an_abstract_target_without_building_the_state(tmp_path):
  checkpoints = saved(tmp_path)
  built = []

  def init(rng):
    built.append(rng)
    return make_state(0).replace(rng=rng)

  target = checkpoint_lib.abstract_state(init, jax.random.key(0), None)
  assert isinstance(target.params["w"], jax.ShapeDtypeStruct)
  step, state, _ = checkpoints.restore(target)
  assert step == 2 and len(built) == 1  # traced once by eval_shape, never run
  assert isinstance(built[0], jax.core.Tracer)
  np.testing.assert_array_equal(state.params["w"], make_state(2).params["w"])
  assert state.params["b"].dtype == jnp.bfloat16
  checkpoints.close()


def test_when_no_checkpoint_restores_nothing_is_moved(tmp_path):
  checkpoints = saved(tmp_path)
  truncate(tmp_path / "1")
  truncate(tmp_path / "2")
  with pytest.raises(checkpoint_lib.CorruptCheckpointError, match=r"steps \[1, 2\]"):
    checkpoints.restore(make_state(0))
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]
  checkpoints.close()


def _closed_loop_error():
  """The unraisable error a tensorstore completion reports once orbax closed its loop."""
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as error:
    return types.SimpleNamespace(exc_value=error, exc_traceback=error.__traceback__)
  raise AssertionError("asyncio accepted a callback on a closed loop")


def test_a_damaged_checkpoint_adds_no_event_loop_tracebacks(tmp_path, monkeypatch):
  # A failed restore used to print several "RuntimeError: Event loop is
  # closed" tracebacks (tensorstore's reads finishing after orbax closed its
  # loop) around the one-line warning, some of them after the restore had
  # returned. Other unraisable errors still go to the hook installed before.
  # The filter is in place before anything runs: a late error of an earlier
  # test's restore, arriving before this test's first save, would otherwise
  # reach `reported` unfiltered.
  reported = []
  monkeypatch.setattr(sys, "unraisablehook",
                      checkpoint_lib._closed_event_loop_filter(reported.append))
  hook = sys.unraisablehook
  checkpoints = saved(tmp_path)
  truncate(tmp_path / "2")
  assert checkpoints.restore(make_state(0))[0] == 1
  checkpoints.close()
  gc.collect()
  assert not [u for u in reported if "Event loop is closed" in str(u.exc_value)], reported
  assert sys.unraisablehook is hook  # save and restore did not stack a second filter
  late = _closed_loop_error()  # a completion arriving after the restore returned
  sys.unraisablehook(late)
  same_text = RuntimeError("Event loop is closed")  # not raised by asyncio's check
  other = ValueError("other")
  for error in (same_text, other):
    sys.unraisablehook(types.SimpleNamespace(exc_value=error, exc_traceback=None))
  assert [u.exc_value for u in reported] == [same_text, other]


def test_the_first_save_puts_the_filter_over_the_hook_in_place(tmp_path, monkeypatch):
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)
  saved(tmp_path).close()
  assert sys.unraisablehook is not reported.append
  late, other = _closed_loop_error(), ValueError("other")
  sys.unraisablehook(late)
  sys.unraisablehook(types.SimpleNamespace(exc_value=other, exc_traceback=None))
  # Only identities: an earlier test's late error may have come before the save.
  passed = [u.exc_value for u in reported]
  assert other in passed and late.exc_value not in passed


def _numpy_checksum(state):
  """The checksum from its definition: two sums of the bits as uint32 words."""
  plain = weighted = 0
  leaves = jax.tree.leaves(jax.device_get(checkpoint_lib._to_saveable(state)))
  for index, leaf in enumerate(leaves):
    leaf = np.asarray(leaf)
    if leaf.dtype.itemsize == 2:
      words = leaf.view(np.uint16).astype(np.uint64).ravel()
    else:
      words = leaf.view(np.uint32).astype(np.uint64).ravel()
    position = np.arange(words.size, dtype=np.uint64)
    plain += (2 * index + 1) * int(words.sum())
    weighted += (2 * index + 1) * int((words * (2 * position + 1)).sum())
  return f"{plain % 2**32:08x}{weighted % 2**32:08x}"


def test_checksum_matches_its_definition_and_sees_every_single_bit():
  state = make_state(3)
  # Leaves of equal sizes, apart in the leaf order (as a layer's parameters
  # and their momentum are), and two of another size.
  state = state.replace(opt_state=({"w": state.params["w"] * 3.0 + 1.0},
                                   jnp.arange(5, dtype=jnp.float32),
                                   jnp.arange(3, dtype=jnp.int32) + 7))
  assert checkpoint_lib.state_checksum(state) == _numpy_checksum(state)
  # Two leaves of one size swapped (the same words, in other leaves):
  # the leaf weights see it.
  w, other = state.params["w"], state.opt_state[0]["w"]
  moved = state.replace(params=dict(state.params, w=other), opt_state=({"w": w},
                                                                        *state.opt_state[1:]))
  assert checkpoint_lib.state_checksum(moved) == _numpy_checksum(moved)
  assert checkpoint_lib.state_checksum(moved) != checkpoint_lib.state_checksum(state)
  w = np.asarray(state.params["w"])
  seen = set()
  for bit in range(32):
    flipped = w.copy().view(np.uint32)
    flipped[7, 11] ^= np.uint32(1 << bit)
    other = state.replace(params=dict(state.params, w=jnp.asarray(flipped.view(np.float32))))
    seen.add(checkpoint_lib.state_checksum(other))
  assert len(seen) == 32 and checkpoint_lib.state_checksum(state) not in seen
  # Two values swapped: the plain sum is blind to it, the weighted one not.
  swapped = w.copy()
  swapped[0, 0], swapped[0, 1] = w[0, 1], w[0, 0]
  other = state.replace(params=dict(state.params, w=jnp.asarray(swapped)))
  assert checkpoint_lib.state_checksum(other) != checkpoint_lib.state_checksum(state)


def test_a_failed_save_says_so_in_one_line_and_leaves_the_last_checkpoint(tmp_path):
  # A real storage fault: files may not grow past 64 KiB (RLIMIT_FSIZE, as
  # a full disk does), and the state's data file is larger.
  checkpoints = saved(tmp_path, steps=(1,))
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
  resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
  try:
    with pytest.raises(checkpoint_lib.CheckpointSaveError) as error:
      checkpoints.save(2, make_state(2), {"best_top1": 2.0})
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)
  message = str(error.value)
  assert "\n" not in message and "step 2" in message
  assert "last complete checkpoint is step 1" in message
  checkpoints.close()
  # The rerun resumes from step 1 and can save step 2.
  checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), every_steps=1, max_to_keep=3)
  assert checkpoints.restore(make_state(0))[0] == 1
  checkpoints.save(2, make_state(2), {"best_top1": 2.0})
  assert checkpoints.restore(make_state(0))[0] == 2
  checkpoints.close()
