#!/usr/bin/env bash
# One prepared check for a lent GPU (issue 5), TensorFlow-free.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, ~5 minutes
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh   # tiny sizes, any CPU
#
# 1. images/s of the whole ResNet50 train step (bf16 compute, 224x224,
#    synthetic batches already on the device, state donated) with CE and
#    with Zipf's LS on dense votes, at 1,000 and 10,000 classes;
# 2. a short real Fashion-MNIST run (CE and Zipf's LS, the demo's small
#    ResNet) read straight from the IDX files, no tfds: from
#    $FASHION_MNIST_DIR, else /usr/share/datasets/fashion-mnist (Debian's
#    dataset-fashion-mnist), else the part is skipped with a note.
# Prints one Markdown table last and, when $OUT is set (the device tool),
# writes it to $OUT/gpu_check.md. Needs jax, flax, optax, chex (no TensorFlow).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}"
"$PYTHON" - <<'EOF'
import functools, glob, gzip, os, platform, time

import jax
import jax.numpy as jnp
import numpy as np

from zipfls_jax import training
from zipfls_jax.models import get_model

TINY = os.environ.get("GPU_CHECK_TINY") == "1"
mesh = training.make_data_mesh()
device = jax.devices()[0]
rows = []
print(f"# {device.device_kind} x{jax.device_count()} ({device.platform}), jax {jax.__version__}, "
      f"tiny={TINY}", flush=True)


def make_state_and_step(model, objective, image_shape, steps_per_epoch, num_epochs):
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=steps_per_epoch,
      num_epochs=num_epochs)
  tx = training.create_optimizer(schedule)
  init = jax.jit(functools.partial(training.create_train_state, model=model, tx=tx,
                                   image_shape=image_shape),
                 out_shardings=training.replicated(mesh))
  step = training.compile_train_step(model, tx, objective, mesh, learning_rate_fn=schedule)
  return init(jax.random.key(0)), step


# 1. Synthetic ResNet50 throughput.
model_name, size, batch, warmup, timed = (
    ("resnet_tiny", 32, 16, 2, 3) if TINY else ("resnet50", 224, 256, 5, 30))
for classes, lam in ((1000, 0.1), (10000, 1.0)):
  rng = np.random.default_rng(0)
  data = training.shard_batch(
      {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
       "label": rng.integers(0, classes, size=batch).astype(np.int32)}, mesh)
  rates = {}
  for method in ("ce", "zipf"):
    model = get_model(model_name, num_classes=classes, dtype=jnp.bfloat16)
    objective = training.Objective(method=method, lam=lam)
    state, step = make_state_and_step(model, objective, (size, size, 3), 1000, 1)
    for _ in range(warmup):
      state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(timed):
      state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    rates[method] = timed * batch / (time.perf_counter() - start)
    assert np.isfinite(float(metrics["loss"])), metrics
  rows.append((f"{model_name} bf16 {size}x{size}, {classes:,} classes, batch {batch}",
               f"{rates['ce']:,.0f}", f"{rates['zipf']:,.0f}",
               f"{rates['ce'] / rates['zipf']:.3f}"))
  print(rows[-1], flush=True)


# 2. Fashion-MNIST from IDX files, no tfds.
def read_idx(path):
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  ndim = raw[3]
  shape = np.frombuffer(raw, ">u4", count=ndim, offset=4)
  return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def find(folder, stem):
  hits = sorted(glob.glob(os.path.join(folder, stem + "*")))
  return hits[0] if hits else None


folder = next((d for d in (os.environ.get("FASHION_MNIST_DIR"),
                           "/usr/share/datasets/fashion-mnist")
               if d and find(d, "train-images-idx3-ubyte")), None)
if folder is None:
  rows.append(("Fashion-MNIST run", "skipped: no IDX files (set FASHION_MNIST_DIR)", "-", "-"))
else:
  mean, std = 0.2860, 0.3530
  load = lambda stem: read_idx(find(folder, stem))
  x_train = ((load("train-images-idx3-ubyte") / 255.0 - mean) / std).astype(np.float32)[..., None]
  y_train = load("train-labels-idx1-ubyte").astype(np.int32)
  x_test = ((load("t10k-images-idx3-ubyte") / 255.0 - mean) / std).astype(np.float32)[..., None]
  y_test = load("t10k-labels-idx1-ubyte").astype(np.int32)
  steps, fm_batch, eval_batch = (20, 32, 400) if TINY else (1000, 128, 1000)
  if TINY:
    x_test, y_test = x_test[:800], y_test[:800]
  accuracies = {}
  for method in ("ce", "zipf"):
    model = get_model("cifar_resnet_tiny", num_classes=10, vote_upsample=2)
    objective = training.Objective(method=method, lam=0.1)
    state, step = make_state_and_step(model, objective, (28, 28, 1), steps // 5, 5)
    eval_step = training.compile_eval_step(model, mesh)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(steps):
      idx = rng.integers(0, len(x_train), size=fm_batch)
      images = x_train[idx]
      flip = rng.random(fm_batch) < 0.5
      images[flip] = images[flip, :, ::-1]
      # Random crop 28 after zero padding 4 (in normalised units, pad with the
      # value of a black pixel).
      padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)), constant_values=-mean / std)
      dy, dx = rng.integers(0, 9, size=2)
      images = padded[:, dy:dy + 28, dx:dx + 28]
      state, metrics = step(state, training.shard_batch({"image": images,
                                                        "label": y_train[idx]}, mesh))
    jax.block_until_ready(metrics)
    train_s = time.perf_counter() - start
    correct = count = 0.0
    for lo in range(0, len(x_test), eval_batch):
      images, labels = x_test[lo:lo + eval_batch], y_test[lo:lo + eval_batch]
      pad = eval_batch - len(labels)
      sums = jax.device_get(eval_step(state, training.shard_batch({
          "image": np.pad(images, ((0, pad), (0, 0), (0, 0), (0, 0))),
          "label": np.pad(labels, (0, pad)),
          "mask": np.arange(eval_batch) < len(labels)}, mesh)))
      correct += float(sums["top1"]); count += float(sums["count"])
    accuracies[method] = (100.0 * correct / count, steps * fm_batch / train_s)
  rows.append((f"Fashion-MNIST, cifar_resnet_tiny, {steps} steps of {fm_batch} "
               "(top-1 %; train img/s incl. compile)",
               f"{accuracies['ce'][0]:.2f} ({accuracies['ce'][1]:,.0f} img/s)",
               f"{accuracies['zipf'][0]:.2f} ({accuracies['zipf'][1]:,.0f} img/s)", "-"))

table = ["| check | CE | Zipf's LS | CE / Zipf (throughput) |", "|---|---|---|---|"]
table += ["| " + " | ".join(row) + " |" for row in rows]
header = f"{device.device_kind} x{jax.device_count()}, jax {jax.__version__}, {time.strftime('%Y-%m-%d')}"
if os.environ.get("OUT"):  # the device tool brings back what lands under $OUT
  with open(os.path.join(os.environ["OUT"], "gpu_check.md"), "w") as f:
    f.write(header + "\n\n" + "\n".join(table) + "\n")
print()
print(header)
print("\n".join(table))
EOF
