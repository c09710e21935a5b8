"""What each training method costs, relative to cross-entropy: the paper's efficiency claim.

Every method of `zipfls_jax.training.methods` is built from its paper
config (`experiments/configs/paper.py`, CIFAR-100 settings: BYOT gets its
exits, BAKE its groups of four, ...) on one model and batch, and its whole
jitted train step (forward passes, loss, backward, SGD) is compiled on this
machine's devices. Printed per method, each relative to CE:

* forward passes per step and images through the network per step (CS-KD
  runs its anchors and friends as two half-batch passes; DDGSD two views;
  BAN's teacher, here the same model, one pass in evaluation mode);
* XLA's flop count of the compiled step (`cost_analysis`), exact;
* the compiled step's memory (`memory_analysis`: arguments + outputs +
  temporaries, a donated buffer counted once), exact;
* the extra state the method keeps: parameters beyond the plain model's
  (BYOT's exits) and its method state (OLS's matrices, PS-KD's store, BAN's
  teacher: a whole model, so only at the benchmarked model's size), in
  bytes, at CIFAR-100 scale (50,000 x 100) and at ImageNet scale
  (1,281,167 x 1,000; computed from shapes, nothing allocated);
* the measured step time, as a ratio to CE's taken in one run: steps of
  every method timed in turn, `--reps` rounds, median per method.

    python -m benchmarks.method_costs                      # CIFAR ResNet18, batch 128
    python -m benchmarks.method_costs --model=resnet50 --image_size=224 --batch=16
    python -m benchmarks.method_costs --model=cifar_resnet_tiny --batch=32 --reps=2  # quick
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

from zipfls_jax import xla_flags

xla_flags.configure()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np

from experiments.configs import paper
from zipfls_jax.training import loop, methods, parallel

METHODS = ("ce", "ls", "zipf", "tf_kd", "cs_kd", "bake", "ddgsd", "byot", "ols", "ps_kd", "ban")
CIFAR_SCALE = (100, 50_000)
IMAGENET_SCALE = (1000, 1_281_167)


def tree_bytes(tree) -> int:
  return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                 for x in jax.tree.leaves(tree)))


def make_config(method, model, image_size, batch):
  config = paper.recipe("cifar100", model, method)
  config.image_size = image_size
  config.batch_size = batch
  if model.startswith("resnet"):
    config.vote_upsample = 0
  return config


def make_batch(needs, batch, image_size, num_classes, rng):
  # Rows in same-class groups of (friends + 1), as the class-paired stream gives.
  group = needs.friends + 1
  labels = np.repeat(rng.integers(0, num_classes, size=batch // group), group)
  out = {"image": rng.normal(size=(batch, image_size, image_size, 3)).astype(np.float32),
         "label": labels.astype(np.int32)}
  if needs.views == 2:
    out["image2"] = rng.normal(size=out["image"].shape).astype(np.float32)
  if needs.index or needs.friends:
    out["index"] = rng.permutation(CIFAR_SCALE[1])[:batch].astype(np.int32)
  return out


def method_state_bytes(method, scale) -> int:
  """Bytes of the method's state at (classes, training examples), from shapes only."""
  num_classes, num_examples = scale
  return tree_bytes(jax.eval_shape(lambda: method.init_state(num_classes, num_examples)))


def build(method, args, mesh, rng):
  if method == "ban":
    # Born-again: a teacher of the same model (its weights do not change the cost).
    setup = loop.build_setup(make_config("ce", args.model, args.image_size, args.batch),
                             num_train_examples=CIFAR_SCALE[1])
    shapes = jax.eval_shape(lambda: setup.eval_model.init(
        jax.random.key(0), np.zeros((1, args.image_size, args.image_size, 3), np.float32),
        train=False))
    setup = dataclasses.replace(setup, method=methods.BAN().with_teacher(setup.eval_model, {
        "params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}))
  else:
    config = make_config(method, args.model, args.image_size, args.batch)
    setup = loop.build_setup(config, num_train_examples=CIFAR_SCALE[1])
  repl = parallel.replicated(mesh)
  state = jax.jit(setup.init_state, out_shardings=repl)(jax.random.key(0))
  step = parallel.compile_train_step(setup.model, setup.tx, setup.method, mesh,
                                     learning_rate_fn=setup.learning_rate_fn,
                                     steps_per_epoch=setup.steps_per_epoch)
  batch = parallel.shard_batch(make_batch(setup.method.data_needs, args.batch, args.image_size,
                                          setup.num_classes, rng), mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  memory = compiled.memory_analysis()
  # The state is donated: outputs that reuse an argument's buffer count once.
  memory_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                  - memory.alias_size_in_bytes + memory.temp_size_in_bytes
                  ) if memory is not None else float("nan")
  plain = loop.build_setup(make_config("ce", args.model, args.image_size, args.batch),
                           num_train_examples=CIFAR_SCALE[1])
  passes = setup.method.forward_passes + (method == "ban")  # the teacher's forward
  params_bytes = tree_bytes(jax.eval_shape(setup.init_state, jax.random.key(0)).params)
  plain_bytes = tree_bytes(jax.eval_shape(plain.init_state, jax.random.key(0)).params)
  images = args.batch * (2 if method in ("ddgsd", "ban") else 1)
  row = {"passes": passes, "images": images, "flops": float(cost.get("flops", float("nan"))),
         "memory": float(memory_bytes), "extra_params": params_bytes - plain_bytes,
         "state_cifar": method_state_bytes(setup.method, CIFAR_SCALE),
         # BAN's teacher is a whole model of the run's own size: no ImageNet figure.
         "state_imagenet": (None if method == "ban"
                            else method_state_bytes(setup.method, IMAGENET_SCALE)),
         "compile_s": compile_s}
  return [compiled, state, batch], row


def megabytes(n) -> str:
  if n is None:
    return "-"
  return f"{n / 1e6:,.1f} MB" if n else "0"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cifar_resnet18")
  parser.add_argument("--image_size", type=int, default=32)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--reps", type=int, default=3)
  parser.add_argument("--methods", default=",".join(METHODS))
  args = parser.parse_args()
  names = args.methods.split(",")
  if names[0] != "ce":
    names = ["ce"] + [n for n in names if n != "ce"]
  mesh = parallel.make_data_mesh()
  rng = np.random.default_rng(0)
  print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), jax {jax.__version__}; {args.model} "
        f"{args.image_size}x{args.image_size}, batch {args.batch}, {args.reps} rounds",
        flush=True)
  steps, rows = {}, {}
  for name in names:
    steps[name], rows[name] = build(name, args, mesh, rng)
    print(f"# compiled {name} in {rows[name]['compile_s']:.0f} s", flush=True)
  times = {name: [] for name in names}
  for name in names:  # one warm-up step each
    compiled, state, batch = steps[name]
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    steps[name][1] = state
  for _ in range(args.reps):
    for name in names:
      compiled, state, batch = steps[name]
      start = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      times[name].append(time.perf_counter() - start)
      steps[name][1] = state
  ce = rows["ce"]
  ce_time = statistics.median(times["ce"])
  print("| method | forward passes | images / step | flops | memory | extra params "
        "| method state (CIFAR-100) | method state (ImageNet) | step time (s) "
        "| step time (per-round ratios min-max) |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for name in names:
    row, median = rows[name], statistics.median(times[name])
    # Each round's ratio to CE's step of the same round: their spread.
    ratios = [t / c for t, c in zip(times[name], times["ce"])]
    spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
    print(f"| {name} | {row['passes']} | {row['images'] / ce['images']:.2f}x "
          f"| {row['flops'] / ce['flops']:.3f}x | {row['memory'] / ce['memory']:.3f}x "
          f"| {megabytes(row['extra_params'])} | {megabytes(row['state_cifar'])} "
          f"| {megabytes(row['state_imagenet'])} | {median:.3f} ({spread}) "
          f"| {median / ce_time:.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) |", flush=True)


if __name__ == "__main__":
  main()
