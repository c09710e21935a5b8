"""Two real processes on localhost, two fake CPU devices each (gloo collectives).

Checks what only several processes can break: the evaluation counts every
example once and agrees with one process; SIGTERM to both makes both save
at the same step and stop, and the resumed run ends bit-equal to an
uninterrupted one; a SIGKILL of one process makes the other exit with an
error instead of hanging. Every wait has a timeout, so CI cannot hang.

Two pairs of processes, which share one JAX compilation cache: the first
runs uninterrupted, then starts the same run again in another folder and
is preempted there; the second resumes that run, then starts a slow one
in which one of its processes is killed.
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


def _launch(data_dir, cache_dir, *runs):
  """A pair of processes training STEPS steps in each `(workdir, seconds per batch)` of `runs`."""
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  run_args = [f"{workdir}:{seconds}" for workdir, seconds in runs]
  return [subprocess.Popen(
      [sys.executable, "-m", "tests.training.multiprocess_worker", str(port), str(index),
       str(STEPS), data_dir, str(cache_dir), *run_args],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for index in (0, 1)]


def _finish(procs, timeout=TIMEOUT):
  """(return codes, each process's run summaries, outputs); kills whatever outlives `timeout`."""
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
    summaries.append([json.loads(line[len("SUMMARY "):]) for line in lines])
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


@pytest.mark.starts_first  # about 60 s on one worker
def test_two_processes_evaluate_exactly_resume_after_sigterm_and_fail_on_a_kill(
    tmp_path, small_fashion):
  started = time.monotonic()
  straight, resumed, killed = tmp_path / "straight", tmp_path / "resumed", tmp_path / "killed"
  cache = tmp_path / "jax_cache"
  # The first pair runs uninterrupted in `straight`, then again in
  # `resumed`, where both processes get SIGTERM mid-run.
  first_procs = _launch(small_fashion, cache, (straight, 0.0), (resumed, 0.2))
  _wait_for_first_record(resumed, first_procs)
  for proc in first_procs:
    proc.send_signal(signal.SIGTERM)
  codes, first, outputs = _finish(first_procs)
  assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert [len(runs) for runs in first] == [2, 2], outputs[0][-3000:] + outputs[1][-3000:]
  whole = [runs[0] for runs in first]
  preempted = [runs[1] for runs in first]
  assert [s["step"] for s in whole] == [STEPS, STEPS]
  assert not whole[0]["preempted"] and not whole[1]["preempted"]
  assert preempted[0]["preempted"] and preempted[1]["preempted"], preempted
  stop = preempted[0]["step"]
  assert preempted[1]["step"] == stop and 1 <= stop < STEPS
  assert (resumed / "checkpoints" / str(stop)).is_dir()

  # A fresh pair resumes it, then trains slowly in `killed` until one of
  # its processes is killed: the other must fail rather than wait forever.
  second_procs = _launch(small_fashion, cache, (resumed, 0.0), (killed, 1.0))
  _wait_for_first_record(killed, second_procs)
  second_procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  kill_codes, second, kill_outputs = _finish(second_procs)
  survivor_exit_s = time.monotonic() - killed_at
  assert kill_codes[0] != 0, kill_outputs[0][-3000:]
  # Both finished the resumed run before (its summary comes at its end),
  # and neither finished the killed one.
  assert [len(runs) for runs in second] == [1, 1], kill_outputs[0][-3000:] + kill_outputs[1][-3000:]
  second = [runs[0] for runs in second]
  assert [s["step"] for s in second] == [STEPS, STEPS]
  assert not second[0]["preempted"]

  # Every evaluation counted each of the split's examples once.
  for summary in whole + preempted + second:
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
