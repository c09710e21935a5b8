"""What the Zipf's-law curve adds to an evaluation (issue 11: at most 5% at C=1,000).

The loop's eval step (`training.compile_eval_step`) sums each example's
ranked softmax besides top-1/top-5. It is timed against the same compiled
step with the ranked sums dropped from its outputs, which XLA then removes
(the script checks that the baseline's HLO has no sort), on this machine's
devices, alternating the two so that load drifts hit both alike:

* `resnet50`, 224x224, 1,000 classes (the ImageNet evaluation);
* `cifar_resnet18`, 32x32, 1,000 classes: a cheap network with many
  classes, the least favourable case for the sort.

On a loaded machine the whole-step difference is within the noise of one
step, so the added work is also timed alone: `ranked_probability_sums` on
the step's (batch, 1000) logits, jitted over the same mesh, many times
(median); its share of the eval step is the estimate that the whole-step
ratio should agree with. Also timed: the host work done once per evaluation
(`zipf_curves.record_evaluation`: two fits and one .npz written).

  python -m benchmarks.zipf_law_eval_cost [--reps 7] [--resnet50_batch 32] [--cifar_batch 256]
"""
from __future__ import annotations

import argparse
import functools
import platform
import re
import statistics
import tempfile
import time

import jax
import numpy as np

from zipfls_jax import training, zipf_law
from zipfls_jax.models import get_model
from zipfls_jax.training import zipf_curves


def build(model_name, num_classes, size, batch, mesh):
  model = get_model(model_name, num_classes=num_classes)
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=100, num_epochs=1)
  init = jax.jit(functools.partial(training.create_train_state, model=model,
                                   tx=training.create_optimizer(schedule),
                                   image_shape=(size, size, 3)),
                 out_shardings=training.replicated(mesh))
  state = init(jax.random.key(0))
  rng = np.random.default_rng(0)
  data = training.shard_batch(
      {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
       "label": rng.integers(0, num_classes, size=batch).astype(np.int32),
       "mask": np.arange(batch) < batch - 3}, mesh)
  with_curve = training.compile_eval_step(model, mesh)
  inner = training.make_eval_step(model)
  without = jax.jit(lambda s, b: {k: v for k, v in inner(s, b).items() if k != "ranked"},
                    in_shardings=(training.replicated(mesh), training.batch_sharded(mesh)),
                    out_shardings=training.replicated(mesh))
  hlo = without.lower(state, data).compile().as_text()
  assert not re.search(r"\bsort\b", hlo), "the baseline still sorts"
  assert re.search(r"\bsort\b", with_curve.lower(state, data).compile().as_text())
  return {"with": with_curve, "without": without}, state, data


def time_pair(steps, state, data, reps):
  for step in steps.values():
    jax.block_until_ready(step(state, data))  # compile and warm up
  times = {name: [] for name in steps}
  for _ in range(reps):
    for name, step in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(step(state, data))
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}, times


def ranked_sums_alone(num_classes, batch, mesh, reps):
  """Median seconds of the ranked sums on (batch, num_classes) logits."""
  rng = np.random.default_rng(2)
  data = training.shard_batch(
      {"logits": (3 * rng.normal(size=(batch, num_classes))).astype(np.float32),
       "label": rng.integers(0, num_classes, size=batch).astype(np.int32),
       "mask": np.arange(batch) < batch - 3}, mesh)
  fn = jax.jit(lambda b: zipf_law.ranked_probability_sums(b["logits"], b["label"],
                                                          where=b["mask"]),
               out_shardings=training.replicated(mesh))
  jax.block_until_ready(fn(data))
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn(data))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def host_cost(num_classes, reps):
  rng = np.random.default_rng(1)
  probs = rng.random((2, num_classes)).astype(np.float32)
  ranked = zipf_law.RankedProbabilitySums(probs=np.sort(probs)[:, ::-1].copy(),
                                          nontarget=np.sort(probs)[:, :0:-1].copy(),
                                          count=np.array([3.0, 4.0], np.float32))
  with tempfile.TemporaryDirectory() as workdir:
    zipf_curves.record_evaluation(workdir, 0, ranked)  # compile the fits
    times = []
    for step in range(1, reps + 1):
      start = time.perf_counter()
      zipf_curves.record_evaluation(workdir, step, ranked)
      times.append(time.perf_counter() - start)
  return statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reps", type=int, default=7)
  parser.add_argument("--resnet50_batch", type=int, default=32)
  parser.add_argument("--cifar_batch", type=int, default=256)
  args = parser.parse_args()
  mesh = training.make_data_mesh()
  print(f"{platform.processor() or platform.machine()}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
  print("| model | image | C | batch | eval step ms (no curve) | with curve ms | ratio | "
        "ratios per rep | ranked sums alone ms | alone / step |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for model_name, size, batch in (("cifar_resnet18", 32, args.cifar_batch),
                                  ("resnet50", 224, args.resnet50_batch)):
    steps, state, data = build(model_name, 1000, size, batch, mesh)
    medians, times = time_pair(steps, state, data, args.reps)
    per_rep = ", ".join(f"{w / o:.3f}" for w, o in zip(times["with"], times["without"]))
    alone = ranked_sums_alone(1000, batch, mesh, 20 * args.reps)
    print(f"| {model_name} | {size} | 1000 | {batch} | {1e3 * medians['without']:.1f} | "
          f"{1e3 * medians['with']:.1f} | {medians['with'] / medians['without']:.3f} | "
          f"{per_rep} | {1e3 * alone:.2f} | {100 * alone / medians['without']:.2f}% |",
          flush=True)
  print(f"Host work per evaluation (two fits + one .npz, C=1000): "
        f"{1e3 * host_cost(1000, args.reps):.2f} ms")


if __name__ == "__main__":
  main()
