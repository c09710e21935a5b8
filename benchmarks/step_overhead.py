"""Whole-train-step cost of Zipf's LS over cross-entropy.

Issue 5: one jitted train step (forward, dense votes, loss, backward, SGD
with momentum and weight decay, BN statistics; the state donated) with
Zipf's LS on dense votes against the same step with plain CE, on this
machine's devices (data-parallel over all of them, as in training):

* `cifar_resnet18`, batch 128, 32x32x3, 100 classes, votes upsampled x2
  (the CIFAR recipe); the target is a ratio of at most 1.05;
* `resnet50` at 224x224 with 1,000 and 10,000 classes, votes from the
  final 7x7 map (the ImageNet / iNat recipe): the ratio is reported.

Steps of the two objectives are timed alternately and the median of each
is compared, so drifting machine load affects both alike. The other
methods' costs (step time, flops, memory, state) are
`benchmarks/method_costs.py`'s.

  python -m benchmarks.step_overhead [--reps 5] [--resnet50_batch 8] [--only cifar]
"""
from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

import jax
import numpy as np

from zipfls_jax import training
from zipfls_jax.models import get_model


def build_step(model_name, num_classes, size, batch, objective, vote_upsample, mesh):
  model = get_model(model_name, num_classes=num_classes, vote_upsample=vote_upsample)
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=100, num_epochs=1)
  tx = training.create_optimizer(schedule)
  init = jax.jit(functools.partial(training.create_train_state, model=model, tx=tx,
                                   image_shape=(size, size, 3)),
                 out_shardings=training.replicated(mesh))
  state = init(jax.random.key(0))
  step = training.compile_train_step(model, tx, objective, mesh, learning_rate_fn=schedule)
  rng = np.random.default_rng(0)
  batch = training.shard_batch(
      {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
       "label": rng.integers(0, num_classes, size=batch).astype(np.int32)}, mesh)
  state, metrics = step(state, batch)  # compile
  jax.block_until_ready(metrics)
  return step, state, batch


def compare(model_name, num_classes, size, batch, lam, vote_upsample, reps, mesh):
  ce = training.Objective(method="ce")
  zipf = training.Objective(method="zipf", lam=lam)
  steps = {}
  for name, objective in (("ce", ce), ("zipf", zipf)):
    steps[name] = list(build_step(model_name, num_classes, size, batch, objective,
                                  vote_upsample, mesh))
  times = {"ce": [], "zipf": []}
  for _ in range(reps):
    for name in ("ce", "zipf"):
      step, state, data = steps[name]
      start = time.perf_counter()
      state, metrics = step(state, data)
      jax.block_until_ready(metrics)
      times[name].append(time.perf_counter() - start)
      steps[name][1] = state
  ce_s, zipf_s = statistics.median(times["ce"]), statistics.median(times["zipf"])
  return ce_s, zipf_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--cifar_batch", type=int, default=128)
  parser.add_argument("--resnet50_batch", type=int, default=8)
  parser.add_argument("--only", choices=("cifar", "resnet50"), default=None)
  args = parser.parse_args()

  mesh = training.make_data_mesh()
  print(f"# {platform.processor() or platform.machine()}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), jax {jax.__version__}")
  cases = []
  if args.only in (None, "cifar"):
    cases.append(("cifar_resnet18", 100, 32, args.cifar_batch, 0.1, 2))
  if args.only in (None, "resnet50"):
    cases.append(("resnet50", 1000, 224, args.resnet50_batch, 0.1, None))
    cases.append(("resnet50", 10000, 224, args.resnet50_batch, 1.0, None))
  print("| model | classes | batch | CE step (s) | Zipf LS step (s) | ratio |")
  print("|---|---|---|---|---|---|")
  for model_name, classes, size, batch, lam, upsample in cases:
    ce_s, zipf_s = compare(model_name, classes, size, batch, lam, upsample, args.reps, mesh)
    print(f"| {model_name} {size}x{size} | {classes:,} | {batch} | {ce_s:.3f} | {zipf_s:.3f} "
          f"| {zipf_s / ce_s:.3f} |", flush=True)


if __name__ == "__main__":
  main()
