"""Cost of dense votes in a training step: forward+backward with votes vs without.

Issue 3's budget: a jitted forward+backward of `cifar_resnet18` at batch 128
with votes (x2 bilinear resize, SPEC 1.1) must take at most 1.05x the same
step without votes. Votes are returned as an output so XLA cannot drop them.
The two variants run interleaved so that load from other processes hits both
alike; the median of each is reported.

  python -m benchmarks.model_overhead [--model cifar_resnet18] [--batch 128] [--reps 7]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from zipfls_jax.models import get_model


def make_step(model, with_votes: bool):
  def loss_fn(params, batch_stats, images, labels):
    out, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                               train=True, votes=with_votes, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(out.logits, labels).mean()
    return loss, (out.votes, updates["batch_stats"])

  @jax.jit
  def step(params, batch_stats, images, labels):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, images, labels)
    return loss, grads, aux

  return step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="cifar_resnet18")
  parser.add_argument("--num_classes", type=int, default=100)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--size", type=int, default=32)
  parser.add_argument("--upsample", type=int, default=2)
  parser.add_argument("--reps", type=int, default=7)
  args = parser.parse_args()

  model = get_model(args.model, num_classes=args.num_classes, vote_upsample=args.upsample)
  images = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
  labels = jax.random.randint(jax.random.key(1), (args.batch,), 0, args.num_classes)
  variables = jax.jit(lambda x: model.init(jax.random.key(2), x, train=False))(images)
  params, batch_stats = variables["params"], variables["batch_stats"]

  steps = {"no_votes": make_step(model, False), "votes": make_step(model, True)}
  times = {k: [] for k in steps}
  for name, step in steps.items():
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, batch_stats, images, labels))  # compile
    print(f"{name}: compile+first run {time.perf_counter() - t0:.1f}s", flush=True)
    jax.block_until_ready(step(params, batch_stats, images, labels))  # warm-up
  for _ in range(args.reps):
    for name, step in steps.items():
      t0 = time.perf_counter()
      jax.block_until_ready(step(params, batch_stats, images, labels))
      times[name].append(time.perf_counter() - t0)

  medians = {k: statistics.median(v) for k, v in times.items()}
  print(f"machine: {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"devices {jax.devices()}")
  print(f"{args.model} batch {args.batch} {args.size}x{args.size} C={args.num_classes}, "
        f"votes upsample x{args.upsample}, {args.reps} interleaved reps")
  for name, values in times.items():
    print(f"  {name:9s} median {medians[name]:.3f}s  (min {min(values):.3f}s, max {max(values):.3f}s)")
  print(f"  ratio votes / no_votes: median {medians['votes'] / medians['no_votes']:.3f}, "
        f"min {min(times['votes']) / min(times['no_votes']):.3f} (budget 1.05)")


if __name__ == "__main__":
  main()
