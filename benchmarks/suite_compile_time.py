"""How long XLA:CPU takes to compile the test suite's kind of programs, per XLA_FLAGS.

`make test` spends about half its time compiling: many small programs (a
tiny model's train step, its pmap twin, eager ops of many shapes) under
`jax_disable_most_optimizations`, as `tests/conftest.py` sets. This runs
the same kind of work in a fresh process per setting (XLA reads XLA_FLAGS
once per process), settings alternating over the rounds, and prints the
backend compile seconds (JAX's `/jax/core/compile/backend_compile_duration`
events) and the wall time of each, with the ratio to the first setting.

The work: the mesh train step of `cifar_resnet_tiny` (C=10, batch 16, 8x8
images, Zipf's LS with votes) over 8 fake devices, 3 steps; the same step
under `pmap`, 2 steps; 38 eager `exp`/`sum`/`max` chains of distinct shapes.

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
  import functools  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_num_cpu_devices", 8)
  jax.config.update("jax_disable_most_optimizations", True)
  import flax.jax_utils  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from zipfls_jax import training  # pylint: disable=g-import-not-at-top
  from zipfls_jax.models import get_model  # pylint: disable=g-import-not-at-top

  seconds = collections.Counter()
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **_: seconds.update({event: duration}))
  classes, batch, side = 10, 16, 8
  objective = training.Objective(method="zipf", lam=0.5, correct_only=True)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, side, side, 3)).astype(np.float32)
  labels = rng.integers(0, classes, size=batch).astype(np.int32)
  model = lambda **kw: get_model("cifar_resnet_tiny", num_classes=classes,  # noqa: E731
                                 vote_upsample=2, **kw)
  mesh = training.make_data_mesh()
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.05, lr_schedule="step", steps_per_epoch=10, num_epochs=1)
  tx = training.create_optimizer(schedule)
  init = jax.jit(functools.partial(training.create_train_state, model=model(), tx=tx,
                                   image_shape=(side, side, 3)),
                 out_shardings=training.replicated(mesh))
  started = time.perf_counter()
  step = training.compile_train_step(model(), tx, objective, mesh, learning_rate_fn=schedule,
                                     batch_norm="sync")
  state, sharded = init(jax.random.key(0)), training.shard_batch(
      {"image": images, "label": labels}, mesh)
  for _ in range(3):
    state, metrics = step(state, sharded)
  jax.block_until_ready(metrics)
  pmapped = training.pmap_train_step(model(bn_axis_name=None), tx, objective,
                                     learning_rate_fn=schedule, axis_name="batch")
  state = flax.jax_utils.replicate(jax.device_get(init(jax.random.key(0))))
  split = {"image": images.reshape(8, batch // 8, side, side, 3),
           "label": labels.reshape(8, batch // 8)}
  for _ in range(2):
    state, metrics = pmapped(state, split)
  jax.block_until_ready(metrics)
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
