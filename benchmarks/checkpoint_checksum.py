"""What the checkpoint checksum costs per save, and to compile once per run.

Issue 13: every `Checkpoints.save` computes a 64-bit checksum of the state
on the devices (`checkpoint.state_checksum`, one pass over the state) and
every restore checks it. This times the first checksum of a run (XLA
compiles it then), then the checksum alone and the whole save (which
includes it), alternately, for two states built by the training code
itself: the demo's `cifar_resnet_tiny` and `resnet50` (1,000 classes, SGD
momentum: ~51 M numbers, ~204 MB). Medians over the repetitions, and the
spread (min-max) of each.

  python -m benchmarks.checkpoint_checksum [--reps 5] [--only tiny]
"""
from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time

import jax

from zipfls_jax import training
from zipfls_jax.models import get_model
from zipfls_jax.training import checkpoint as checkpoint_lib

CASES = {"tiny": ("cifar_resnet_tiny", 10, 28), "resnet50": ("resnet50", 1000, 224)}


def build_state(model_name, num_classes, size, mesh):
  model = get_model(model_name, num_classes=num_classes)
  tx = training.create_optimizer(lambda step: 0.1)
  init = jax.jit(functools.partial(training.create_train_state, model=model, tx=tx,
                                   image_shape=(size, size, 3)),
                 out_shardings=training.replicated(mesh))
  return init(jax.random.key(0))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--only", choices=sorted(CASES))
  args = parser.parse_args()
  mesh = training.make_data_mesh()
  print(f"{platform.node()} {jax.devices()[0].platform} x{jax.device_count()}, "
        f"load {os.getloadavg()[0]:.1f}")
  for name, case in CASES.items():
    if args.only and name != args.only:
      continue
    state = build_state(*case, mesh)
    numbers = sum(x.size for x in jax.tree.leaves(checkpoint_lib._to_saveable(state)))
    start = time.perf_counter()
    checkpoint_lib.state_checksum(state)  # compiles
    first_s = time.perf_counter() - start
    checksum_s, save_s = [], []
    with tempfile.TemporaryDirectory() as directory:
      checkpoints = checkpoint_lib.Checkpoints(directory, every_steps=1,
                                               max_to_keep=args.reps + 2)
      checkpoints.save(0, state, {})  # first save: orbax's own setup
      for rep in range(1, args.reps + 1):
        start = time.perf_counter()
        checkpoint_lib.state_checksum(state)
        checksum_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        checkpoints.save(rep, state, {})
        save_s.append(time.perf_counter() - start)
      checkpoints.close()
    med_c, med_s = statistics.median(checksum_s), statistics.median(save_s)
    print(f"{name}: {numbers / 1e6:.2f} M numbers, {len(jax.tree.leaves(state))} arrays | first "
          f"checksum (compiles) {first_s:.2f} s | checksum {med_c * 1e3:.1f} ms "
          f"({min(checksum_s) * 1e3:.1f}-{max(checksum_s) * 1e3:.1f}) | whole save "
          f"{med_s * 1e3:.0f} ms ({min(save_s) * 1e3:.0f}-{max(save_s) * 1e3:.0f}) | "
          f"checksum share of a save {100 * med_c / med_s:.1f}%", flush=True)


if __name__ == "__main__":
  main()
