"""Two real processes on localhost, two fake CPU devices each (gloo collectives).

Checks what only several processes can break: the evaluation counts every
example once and agrees with one process; SIGTERM to both makes both save
at the same step and stop, and the resumed run ends bit-equal to an
uninterrupted one; a SIGKILL of one process makes the other exit with an
error instead of hanging. Every wait has a timeout, so CI cannot hang.

Three pairs of processes, which share one JAX compilation cache: the
uninterrupted pair goes on to a second, slow run, in which one of its
processes is killed; the preempted pair; and the pair that resumes it.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import zipfls_jax.data as data
from tests.data.conftest import write_fashion_idx
from tests.training import multiprocess_worker
from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import loop
from zipfls_jax.training import parallel
from zipfls_jax.training.state import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUM_TEST = 20
STEPS = 9
TIMEOUT = 600  # seconds for any one group of processes: a hang guard, far above a normal run


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, data_dir, cache_dir, then_workdir=None):
  """A pair of processes training STEPS steps in `workdir`, then slowly in `then_workdir`."""
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  then = [] if then_workdir is None else [str(then_workdir)]
  return [subprocess.Popen(
      [sys.executable, "-m", "tests.training.multiprocess_worker", str(workdir), str(port),
       str(index), str(STEPS), data_dir, str(cache_dir), *then],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for index in (0, 1)]


def _finish(procs, timeout=TIMEOUT):
  """(return codes, summaries or None, outputs); kills whatever outlives `timeout`."""
  deadline = time.monotonic() + timeout
  codes, summaries, outputs = [], [], []
  for proc in procs:
    try:
      out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      for p in procs:
        p.kill()
      out, _ = proc.communicate()
      pytest.fail(f"a process ran past {timeout}s (hang?):\n{out[-3000:]}")
    codes.append(proc.returncode)
    outputs.append(out)
    lines = [l for l in out.splitlines() if l.startswith("SUMMARY ")]
    summaries.append(json.loads(lines[-1][len("SUMMARY "):]) if lines else None)
  return codes, summaries, outputs


def _wait_for_first_record(workdir, procs, timeout=TIMEOUT):
  path = pathlib.Path(workdir) / "metrics.jsonl"
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if path.exists() and path.read_text().strip():
      return
    if any(p.poll() is not None for p in procs):
      break
    time.sleep(0.05)
  for p in procs:
    p.kill()
  pytest.fail("the processes did not start training:\n" + procs[0].communicate()[0][-3000:])


def _train_records(workdir):
  return [{k: v for k, v in r.items() if k != "train_images_per_sec"}
          for r in map(json.loads, (pathlib.Path(workdir) / "metrics.jsonl").open())
          if "train_loss" in r]


def _restore(workdir, step, config, mesh):
  setup = loop.build_setup(config, num_train_examples=64)
  init = lambda rng: create_train_state(rng, setup.model, setup.tx,  # noqa: E731
                                        image_shape=setup.image_shape)
  checkpoints = checkpoint_lib.Checkpoints(os.path.join(workdir, "checkpoints"), every_steps=3)
  target = checkpoint_lib.abstract_state(init, jax.random.key(0), parallel.replicated(mesh))
  restored_step, state, _ = checkpoints.restore(target)
  checkpoints.close()
  assert restored_step == step
  return setup, state


@pytest.fixture(scope="module")
def small_fashion(tmp_path_factory):
  root = tmp_path_factory.mktemp("fashion_mp")
  data_dir = root / "tfds"
  data.prepare_fashion_mnist(str(data_dir),
                             idx_dir=str(write_fashion_idx(root / "idx", num_train=64,
                                                           num_test=NUM_TEST)))
  return str(data_dir)


@pytest.mark.starts_first  # about 70 s on one worker
def test_two_processes_evaluate_exactly_resume_after_sigterm_and_fail_on_a_kill(
    tmp_path, small_fashion):
  started = time.monotonic()
  straight, resumed, killed = tmp_path / "straight", tmp_path / "resumed", tmp_path / "killed"
  cache = tmp_path / "jax_cache"
  # A pair that gets SIGTERM mid-run; once it has compiled the steps, an
  # uninterrupted pair (which then trains in `killed` until one of its
  # processes is killed) starts and loads them from the cache.
  preempted_procs = _launch(resumed, small_fashion, cache)
  _wait_for_first_record(resumed, preempted_procs)
  for proc in preempted_procs:
    proc.send_signal(signal.SIGTERM)
  straight_procs = _launch(straight, small_fashion, cache, then_workdir=killed)
  codes, first, outputs = _finish(preempted_procs)
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert first[0]["preempted"] and first[1]["preempted"], first
  stop = first[0]["step"]
  assert first[1]["step"] == stop and 1 <= stop < STEPS
  assert (resumed / "checkpoints" / str(stop)).is_dir()

  # The preempted pair resumes; meanwhile one process of the uninterrupted
  # pair, now in its slow run, is killed, and the other must fail rather than
  # wait forever.
  resume_procs = _launch(resumed, small_fashion, cache)
  _wait_for_first_record(killed, straight_procs)
  straight_procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  kill_codes, whole, kill_outputs = _finish(straight_procs)
  survivor_exit_s = time.monotonic() - killed_at
  assert kill_codes[0] != 0, kill_outputs[0][-3000:]
  # Both finished the uninterrupted run before (its summary comes at its end).
  assert None not in whole, kill_outputs[0][-3000:] + kill_outputs[1][-3000:]
  assert [s["step"] for s in whole] == [STEPS, STEPS]
  assert not whole[0]["preempted"] and not whole[1]["preempted"]

  codes, second, outputs = _finish(resume_procs)
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert [s["step"] for s in second] == [STEPS, STEPS]
  assert not second[0]["preempted"]

  # Every evaluation counted each of the split's examples once.
  for summary in whole + first + second:
    assert all(count == NUM_TEST for count in summary["eval_counts"]), summary
  # Resumed = uninterrupted: parameters bit-equal, and the same train logs.
  config = multiprocess_worker.config_for(STEPS, small_fashion)
  mesh = parallel.make_data_mesh()
  setup, straight_state = _restore(str(straight), STEPS, config, mesh)
  _, resumed_state = _restore(str(resumed), STEPS, config, mesh)
  jax.tree.map(np.testing.assert_array_equal,
               jax.device_get(checkpoint_lib._to_saveable(straight_state)),
               jax.device_get(checkpoint_lib._to_saveable(resumed_state)))
  assert _train_records(resumed) == _train_records(straight)
  assert second[0]["best_top1"] == whole[0]["best_top1"]

  # One process on 8 devices evaluates the final state to the same numbers.
  eval_step = parallel.compile_eval_step(setup.model, mesh)
  single = loop.evaluate(eval_step, straight_state, data.create_eval_iterator(
      "fashion_mnist", global_batch_size=8, data_dir=small_fashion, image_size=16), mesh)
  assert single["count"] == NUM_TEST
  assert (single["top1"], single["top5"]) == (whole[0]["final_top1"], whole[0]["final_top5"])
  print(f"two-process test: {time.monotonic() - started:.1f}s; the survivor of a SIGKILL "
        f"exited after {survivor_exit_s:.1f}s")
