"""One process of the two-process runs in test_multiprocess.py (not a test).

    python -m tests.training.multiprocess_worker PORT PROCESS_ID STEPS DATA_DIR CACHE_DIR \
        WORKDIR:SECONDS_PER_BATCH [WORKDIR:SECONDS_PER_BATCH ...]

Two fake CPU devices, CPU collectives over gloo, the small local
Fashion-MNIST in DATA_DIR, and the tiny config of test_loop.py with
`config.distributed=True`. The process runs that config in each WORKDIR in
turn (one JAX cluster for all of them), every train batch waiting
SECONDS_PER_BATCH, so that the test can signal the processes mid-run.
After each run it prints one line `SUMMARY {json}` with the loop's summary
and the example count of every evaluation.
CACHE_DIR is a JAX compilation cache shared by every process of the test,
so that only the first pair compiles each program.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

if __name__ == "__main__":
  # Only as a process of its own: the test imports this module for
  # `config_for` after its JAX has started.
  jax.config.update("jax_num_cpu_devices", 2)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_disable_most_optimizations", True)
  # JAX writes cache entries from process 0 only; a damaged entry (two
  # writers at once) is compiled again, with a warning.
  jax.config.update("jax_compilation_cache_dir", sys.argv[5])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import zipfls_jax.data as data  # noqa: E402
from tests.training.test_loop import tiny_config  # noqa: E402
from zipfls_jax.training import loop  # noqa: E402


def config_for(steps, data_dir):
  config = tiny_config("fashion_mnist", "cifar_resnet_tiny", steps=int(steps))
  config.data_dir = data_dir
  config.batch_size = 8
  config.eval_batch_size = 8
  config.steps_per_epoch = 3
  config.checkpoint_every_steps = 3
  return config


def run(workdir, port, process_id, steps, data_dir, seconds_per_batch):
  config = config_for(steps, data_dir)
  config.distributed = True
  config.coordinator_address = f"localhost:{port}"
  config.num_processes = 2
  config.process_id = int(process_id)
  config.heartbeat_timeout_seconds = 5  # a killed peer fails the other quickly
  config.transfer_guard = False

  counts = []
  evaluate = loop.evaluate

  def counting_evaluate(*args, **kwargs):
    result = evaluate(*args, **kwargs)
    counts.append(result["count"])
    return result

  create = data.create_train_iterator

  def slow_iterator(*args, **kwargs):
    for batch in create(*args, **kwargs):
      time.sleep(seconds_per_batch)
      yield batch

  loop.evaluate = counting_evaluate
  data.create_train_iterator = slow_iterator
  try:
    summary = loop.train_and_evaluate(config, workdir)
  finally:
    loop.evaluate = evaluate
    data.create_train_iterator = create
  print("SUMMARY " + json.dumps(dict(summary, eval_counts=counts)), flush=True)


def main(port, process_id, steps, data_dir, cache_dir, *runs):
  del cache_dir  # read before JAX started
  for spec in runs:
    workdir, _, seconds_per_batch = spec.rpartition(":")
    run(workdir, port, process_id, steps, data_dir, float(seconds_per_batch))


if __name__ == "__main__":
  main(*sys.argv[1:])
