"""How long XLA:CPU takes to compile the test suite's kind of programs, per XLA_FLAGS.

`make test` spends about half its time compiling: many small programs (a
tiny model's train step, its pmap twin, eager ops of many shapes) under
`jax_disable_most_optimizations`, as `tests/conftest.py` sets. This runs
the same kind of work in a fresh process per setting (XLA reads XLA_FLAGS
once per process), settings alternating over the rounds, and prints the
backend compile seconds (JAX's `/jax/core/compile/backend_compile_duration`
events) and the wall time of each, with the ratio to the first setting.

The work, from `tests/training/test_step.py`: the mesh train step of
`cifar_resnet_tiny` (C=10, batch 16, 8x8 images, Zipf's LS with votes)
over 8 fake devices, 3 steps; the same step under `pmap`, 2 steps; then 38
eager `exp`/`sum`/`max` chains of distinct shapes.

  python -m benchmarks.suite_compile_time [--rounds 3] \
      [--settings "" "--xla_cpu_use_fusion_emitters=false"]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

_WORKER_FLAG = "--worker"


def _work() -> dict:
  import collections  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", 8)
  jax.config.update("jax_disable_most_optimizations", True)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # The suite's own step tests' programs (not their assertions).
  from tests.training import test_step  # pylint: disable=g-import-not-at-top

  seconds = collections.Counter()
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **_: seconds.update({event: duration}))
  started = time.perf_counter()
  test_step.run_mesh("sync", 3, 0)
  test_step.run_pmap(None, 2, 0)
  for n in range(2, 40):
    x = jnp.ones((n, 7))
    (jnp.exp(x) * 2 + x.sum(0)).max().block_until_ready()
  return {"wall": time.perf_counter() - started,
          "compile": seconds["/jax/core/compile/backend_compile_duration"]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--settings", nargs="+",
                      default=["", "--xla_cpu_use_fusion_emitters=false"],
                      help="XLA_FLAGS values; the first is the reference")
  args = parser.parse_args(argv)
  print(f"{platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
        f"load average {os.getloadavg()[0]:.2f}")
  results = {s: [] for s in args.settings}
  for r in range(args.rounds):
    for setting in args.settings:
      env = dict(os.environ, XLA_FLAGS=setting, TF_CPP_MIN_LOG_LEVEL="3",
                 ZIPFLS_JAX_XLA_FLAGS="0")
      out = subprocess.run([sys.executable, "-m", "benchmarks.suite_compile_time", _WORKER_FLAG],
                           env=env, capture_output=True, text=True, check=True).stdout
      results[setting].append(json.loads(out.strip().splitlines()[-1]))
      print(f"round {r + 1} {setting or '(default flags)'}: "
            f"compile {results[setting][-1]['compile']:.2f} s, "
            f"wall {results[setting][-1]['wall']:.2f} s", flush=True)
  reference = args.settings[0]
  print("\n| XLA_FLAGS | backend compile s (median) | wall s (median) | "
        "compile ratio per round |")
  print("|---|---|---|---|")
  for setting, runs in results.items():
    ratios = " / ".join(f"{run['compile'] / ref['compile']:.2f}"
                        for run, ref in zip(runs, results[reference]))
    print(f"| `{setting or '(default)'}` | {statistics.median(r['compile'] for r in runs):.2f} "
          f"| {statistics.median(r['wall'] for r in runs):.2f} | {ratios} |")


if __name__ == "__main__":
  if _WORKER_FLAG in sys.argv:
    print(json.dumps(_work()))
  else:
    main()
