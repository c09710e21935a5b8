"""Cost of dense votes in a training step: forward+backward with votes vs without.

Issue 3's budget: a jitted forward+backward of `cifar_resnet18` at batch 128
with votes (x2 bilinear resize, docs/method.md section 1.1) must take at
most 1.05x the same
step without votes. Votes are returned as an output so XLA cannot drop them.
The two variants run interleaved (ABBA) so that load from other processes
hits both alike; medians, minima and the median of adjacent-pair ratios are
reported. On a shared CPU the step-to-step noise can exceed the votes' cost,
so two noise-free views are printed too: the voting alone (`dense_votes` on
the head's feature map) as a share of a step, and XLA's flop counts of both
compiled steps.

  python -m benchmarks.model_overhead [--model cifar_resnet18] [--batch 128] [--reps 10]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import optax

from zipfls_jax import dense_votes
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
  parser.add_argument("--reps", type=int, default=10)
  args = parser.parse_args()

  model = get_model(args.model, num_classes=args.num_classes, vote_upsample=args.upsample)
  images = jax.random.normal(jax.random.key(0), (args.batch, args.size, args.size, 3))
  labels = jax.random.randint(jax.random.key(1), (args.batch,), 0, args.num_classes)
  variables = jax.jit(lambda x: model.init(jax.random.key(2), x, train=False))(images)
  params, batch_stats = variables["params"], variables["batch_stats"]

  steps = {"no_votes": make_step(model, False), "votes": make_step(model, True)}
  times = {k: [] for k in steps}
  flops = {}
  for name, step in steps.items():
    t0 = time.perf_counter()
    steps[name] = step.lower(params, batch_stats, images, labels).compile()
    cost = steps[name].cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax: a list
    flops[name] = float(cost.get("flops", float("nan"))) if cost else float("nan")
    print(f"{name}: compiled in {time.perf_counter() - t0:.1f}s", flush=True)
    jax.block_until_ready(steps[name](params, batch_stats, images, labels))  # warm-up
  for rep in range(args.reps):
    # ABBA order: a load change during a pair hits both variants alike.
    for name in (("no_votes", "votes") if rep % 2 == 0 else ("votes", "no_votes")):
      t0 = time.perf_counter()
      jax.block_until_ready(steps[name](params, batch_stats, images, labels))
      times[name].append(time.perf_counter() - t0)
  paired = statistics.median(v / n for v, n in zip(times["votes"], times["no_votes"]))

  medians = {k: statistics.median(v) for k, v in times.items()}

  # The voting alone, on a feature map of the head's shape.
  (_, state) = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]),
                              variables, images)
  fmap_shape = state["intermediates"]["head"]["feature_map"][0].shape
  fmap = jax.random.normal(jax.random.key(3), fmap_shape)
  head = params["head"]
  vote = jax.jit(lambda f, k, b: dense_votes(f, k, b, upsample=args.upsample))
  jax.block_until_ready(vote(fmap, head["kernel"], head["bias"]))
  vote_times = []
  for _ in range(20):
    t0 = time.perf_counter()
    jax.block_until_ready(vote(fmap, head["kernel"], head["bias"]))
    vote_times.append(time.perf_counter() - t0)
  vote_median = statistics.median(vote_times)

  print(f"machine: {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"devices {jax.devices()}")
  print(f"{args.model} batch {args.batch} {args.size}x{args.size} C={args.num_classes}, "
        f"votes upsample x{args.upsample}, {args.reps} interleaved reps")
  for name, values in times.items():
    print(f"  {name:9s} median {medians[name]:.3f}s  (min {min(values):.3f}s, max {max(values):.3f}s)")
  print("  per rep (no_votes, votes): " + ", ".join(
      f"({n:.2f}, {v:.2f})" for n, v in zip(times["no_votes"], times["votes"])))
  print(f"  ratio votes / no_votes (budget 1.05): of medians {medians['votes'] / medians['no_votes']:.3f}, "
        f"of minima {min(times['votes']) / min(times['no_votes']):.3f}, median of pairs {paired:.3f}")
  print(f"  XLA flop count: no_votes {flops['no_votes'] / 1e9:.1f} GFLOP, votes "
        f"{flops['votes'] / 1e9:.1f} GFLOP, ratio {flops['votes'] / flops['no_votes']:.4f}")
  print(f"  dense_votes alone on {tuple(fmap_shape)}: median {vote_median * 1e3:.2f}ms = "
        f"{vote_median / medians['no_votes']:.4f} of a step without votes")


if __name__ == "__main__":
  main()
