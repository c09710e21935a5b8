"""What the training loop costs beyond its compiled step.

Issue 14: `train_and_evaluate` (input pipeline, batch placement, the step,
metric fetching, JSON/TensorBoard/console logging) against the bare
compiled train step on batches already on the devices, for the demo's tiny
model (`experiments/configs/fashion_mnist_demo.py`, batch 128), where any
overhead shows. Target: loop images/s >= 0.95 x the bare step's.

The loop's images/s is what it logs (`train_images_per_sec`, the time
between logging steps), without the first interval (compilation). The bare
step runs the same model, optimizer and objective, compiled the same way,
on 8 device-resident batches in turn. Loop and bare runs alternate, so
drifting machine load affects both alike; the ratio of each pair is
reported, with their median.

Fashion-MNIST comes from `--data_dir` when prepared there; otherwise
synthetic IDX files of the real shapes (60,000 + 10,000 images of 28x28)
are prepared in a temporary folder: the pipeline's cost does not depend on
the pixel values.

  python -m benchmarks.loop_overhead [--reps 3] [--steps 300] [--log_every 50]
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import os
import platform
import statistics
import struct
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import fashion_mnist_demo  # noqa: E402
from zipfls_jax import data  # noqa: E402
from zipfls_jax.training import loop  # noqa: E402
from zipfls_jax.training import metrics as metrics_lib  # noqa: E402
from zipfls_jax.training import parallel  # noqa: E402


def _write_idx(path, array: np.ndarray, magic: int) -> None:
  header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
  with gzip.open(path, "wb", compresslevel=1) as f:
    f.write(header + array.astype(np.uint8).tobytes())


def synthetic_fashion_mnist(root: str) -> str:
  """A tfds data dir with `fashion_mnist` of the real sizes, random pixels."""
  idx_dir = os.path.join(root, "idx")
  os.makedirs(idx_dir, exist_ok=True)
  rng = np.random.default_rng(0)
  for stem, n in (("train", 60_000), ("t10k", 10_000)):
    _write_idx(os.path.join(idx_dir, f"{stem}-images-idx3-ubyte.gz"),
               rng.integers(0, 256, size=(n, 28, 28)), 2051)
    _write_idx(os.path.join(idx_dir, f"{stem}-labels-idx1-ubyte.gz"), np.arange(n) % 10, 2049)
  data_dir = os.path.join(root, "tfds")
  data.prepare_fashion_mnist(data_dir, idx_dir=idx_dir)
  return data_dir


def make_config(data_dir: str, steps: int, log_every: int):
  config = fashion_mnist_demo.get_config()
  config.data_dir = data_dir
  config.num_train_steps = steps
  config.steps_per_epoch = steps  # one evaluation, at the end (not timed)
  config.log_every_steps = log_every
  config.checkpoint_every_steps = steps
  return config


def loop_images_per_sec(config, workdir: str) -> float:
  """Median of the loop's logged images/s, the first (compiling) interval left out."""
  with contextlib.redirect_stdout(io.StringIO()):
    loop.train_and_evaluate(config, workdir)
  rates = [r["train_images_per_sec"] for r in metrics_lib.read_metrics(workdir)
           if "train_images_per_sec" in r]
  return statistics.median(rates[1:])


def bare_images_per_sec(config, steps: int) -> float:
  """The same compiled step, `steps` times on device-resident batches."""
  setup = loop.build_setup(config, num_train_examples=60_000)
  mesh = parallel.make_data_mesh()
  state = jax.jit(setup.init_state, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  step = parallel.compile_train_step(setup.model, setup.tx, setup.method, mesh,
                                     learning_rate_fn=setup.learning_rate_fn,
                                     batch_norm=config.batch_norm)
  host = data.create_train_iterator(config.dataset, global_batch_size=config.batch_size,
                                    data_dir=config.data_dir or None)
  batches = [parallel.shard_batch(next(host), mesh) for _ in range(8)]
  for batch in batches[:2]:  # compile and warm up
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for i in range(steps):
    state, metrics = step(state, batches[i % len(batches)])
  jax.block_until_ready((state, metrics))
  return steps * config.batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--log_every", type=int, default=50)
  parser.add_argument("--data_dir", default="")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data_dir
    try:
      data.prepare_fashion_mnist(data_dir or None)
    except FileNotFoundError:
      data_dir = synthetic_fashion_mnist(tmp)
    config = make_config(data_dir, args.steps, args.log_every)
    source = "synthetic" if data_dir != args.data_dir else (data_dir or "tfds default dir")
    print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s), jax {jax.__version__}, "
          f"load {os.getloadavg()[0]:.1f}; {config.model}, batch {config.batch_size}, "
          f"{args.steps} steps per run, data: {source}")
    print("| rep | loop images/s | bare step images/s | ratio |")
    print("|---|---|---|---|")
    ratios = []
    for rep in range(args.reps):
      loop_rate = loop_images_per_sec(config, os.path.join(tmp, f"run{rep}"))
      bare_rate = bare_images_per_sec(config, args.steps)
      ratios.append(loop_rate / bare_rate)
      print(f"| {rep} | {loop_rate:.0f} | {bare_rate:.0f} | {ratios[-1]:.3f} |", flush=True)
    print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
  main()
