"""Images/s of the whole jitted train step, per XLA flag set, interleaved.

Issue 15: one compiled train step (forward, dense votes, Zipf's LS, backward,
SGD with momentum and weight decay, BatchNorm statistics; the state donated)
at two shapes:

* `cifar`: CIFAR ResNet18, C=100, 32x32x3, batch 64, votes upsampled x2,
  lambda 0.1 (the CIFAR recipe at batch 64);
* `demo`: the `make demo` step (experiments/configs/fashion_mnist_demo.py:
  `cifar_resnet_tiny`, 28x28x1, C=10, batch 128).

Each variant runs in its own worker process, since XLA flags are read once
when JAX starts. The parent asks the workers in turn for a round of steps,
so that drifting machine load affects every variant alike, and reports the
median images/s of each and its ratio to the first variant with the spread
over rounds. With `--authors_code DIR` (a checkout of the authors'
`pytorch_zipfls` folder) and torch importable, the authors' own train step
(their `train()` in `train.py`, their CIFAR_ResNet18 and loss, unchanged) is
one more interleaved worker at the `cifar` shape.

`--kernels` times the convolutions alone, the CIFAR ResNet18's 3x3 layers
of each stage at batch 64 (forward, and forward plus the gradients with
respect to input and kernel), in each variant's worker and, with torch
importable, with PyTorch's `Conv2d` (2 threads): what remains of the gap
between the two steps once the XLA flags are chosen.

`--profile` prints the per-op breakdown of one variant's step from a
`jax.profiler` trace: time per XLA op kind (convolutions forward and
backward, fusions holding BatchNorm reductions, the vote head, the
optimizer update) and how many of the machine's cores were busy.

  python -m benchmarks.step_speed [--shape cifar|demo] [--variants none,default]
      [--rounds 7] [--steps 3] [--authors_code /tmp/authors/pytorch_zipfls]
  python -m benchmarks.step_speed --profile default [--shape cifar]
  python -m benchmarks.step_speed --kernels [--variants none,default] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# XLA flag sets compared. 'none' is JAX's own default; 'default' is what
# zipfls_jax.xla_flags.configure() sets on CPU (what the entry points use).
VARIANTS = {
    "none": "",
    "default": None,  # filled from zipfls_jax.xla_flags at run time
    # jaxlib 0.10 sends convolutions (and some reductions) to YNNPACK by default.
    "eigen_conv": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
    "no_ynn": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution,-reduce",
    "onednn": "--xla_cpu_use_onednn=true",
    "no_concurrency_sched": "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "eigen_conv_no_concurrency_sched": (
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution "
        "--xla_cpu_enable_concurrency_optimized_scheduler=false"),
}

SHAPES = {
    # model, classes, image size, channels, batch, vote upsample, lambda
    "cifar": ("cifar_resnet18", 100, 32, 3, 64, 2, 0.1),
    "demo": ("cifar_resnet_tiny", 10, 28, 1, 128, 2, 0.1),
}


# ---------------------------------------------------------------- workers

def _jax_worker(shape: str, seed: int):
  """Builds the step; returns run(n) -> list of per-step seconds."""
  import functools

  import jax
  import numpy as np

  from zipfls_jax import training
  from zipfls_jax.models import get_model

  name, classes, size, channels, batch, upsample, lam = SHAPES[shape]
  mesh = training.make_data_mesh()
  model = get_model(name, num_classes=classes, vote_upsample=upsample)
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=100, num_epochs=200)
  tx = training.create_optimizer(schedule)
  init = jax.jit(functools.partial(training.create_train_state, model=model, tx=tx,
                                   image_shape=(size, size, channels)),
                 out_shardings=training.replicated(mesh))
  state = init(jax.random.key(seed))
  objective = training.Objective(method="zipf", lam=lam)
  step = training.compile_train_step(model, tx, objective, mesh, learning_rate_fn=schedule)
  rng = np.random.default_rng(seed)
  data = training.shard_batch(
      {"image": rng.normal(size=(batch, size, size, channels)).astype(np.float32),
       "label": rng.integers(0, classes, size=batch).astype(np.int32)}, mesh)
  box = [state]

  def run(n):
    times = []
    for _ in range(n):
      start = time.perf_counter()
      box[0], metrics = step(box[0], data)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - start)
    return times

  def params():
    return [np.asarray(x) for x in jax.tree.leaves(box[0].params)]

  return run, params, step, data, box


def _torch_worker(authors_dir: str, seed: int):
  """The authors' train() on one fixed batch; returns run(n)."""
  import argparse as argparse_lib
  import logging
  import types

  import numpy as np
  import torch

  # Environment shims only; their files are imported as they are. On a CPU,
  # .cuda() is the identity. train.py imports modules that its train()
  # never uses (a git checkout for log paths, tensorboardX, torchvision,
  # their datasets): stand-ins keep those imports from failing.
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  settings = types.ModuleType("settings")
  settings.logger = logging.getLogger("authors")
  tensorboard = types.ModuleType("tensorboardX")

  class SummaryWriter:
    def __init__(self, *a, **k):
      pass

    def add_scalar(self, *a, **k):
      pass

    def flush(self):
      pass

  tensorboard.SummaryWriter = SummaryWriter
  torchvision = types.ModuleType("torchvision")
  torchvision.models = types.ModuleType("torchvision.models")
  sys.modules.update({"settings": settings, "tensorboardX": tensorboard,
                      "datasets": types.ModuleType("datasets"), "torchvision": torchvision,
                      "torchvision.models": torchvision.models})
  sys.path.insert(0, authors_dir)
  import cifar_models  # pylint: disable=import-error,g-import-not-at-top
  import train as authors_train  # pylint: disable=import-error,g-import-not-at-top

  _, classes, size, channels, batch, _, lam = SHAPES["cifar"]
  torch.manual_seed(seed)
  net = cifar_models.load_model("CIFAR_ResNet18", classes, upsample="bilinear")
  criterion = torch.nn.CrossEntropyLoss()
  optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
  rng = np.random.default_rng(seed)
  images = torch.from_numpy(rng.normal(size=(batch, channels, size, size)).astype(np.float32))
  labels = torch.from_numpy(rng.integers(0, classes, size=batch).astype(np.int64))
  args = argparse_lib.Namespace(smallest_prob=None, exp_lambda=None)

  def run(n):
    stamps = []
    start = time.perf_counter()
    # Their CIFAR Zipf's LS command: --loss_lambda 0.1 --dense --upsample
    # bilinear --alpha 0.1, deeplayer 1, hard ranks, rank_zipf, power 1.
    # train() calls log_output once at the end of each step: the stamps.
    authors_train.train([(images, labels)] * n, args, net, criterion, optimizer, 1,
                        SummaryWriter(), lambda line: stamps.append(time.perf_counter()),
                        lam, False, "rank_zipf", True, "hard", False, 1.0, batch,
                        0.1, "bilinear", 1, 0.001, 1.0, "ce")
    return [b - a for a, b in zip([start] + stamps, stamps)]

  return run


# CIFAR ResNet18's 3x3 convolutions, one per stage: (map side, channels).
KERNEL_SHAPES = ((32, 64), (16, 128), (8, 256), (4, 512))
KERNEL_BATCH = 64


def _kernel_labels():
  return [f"{side}x{side}x{ch} {what}" for side, ch in KERNEL_SHAPES for what in ("fwd", "fwd+bwd")]


def _time_calls(fn, calls):
  """Median seconds of `calls` calls of fn() (fn blocks until done)."""
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _jax_kernel_worker(seed: int):
  """run(calls) -> {label: median seconds} for jitted NHWC convolutions."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  rng = np.random.default_rng(seed)
  numbers = ("NHWC", "HWIO", "NHWC")
  cases = []
  for side, ch in KERNEL_SHAPES:
    x = jnp.asarray(rng.normal(size=(KERNEL_BATCH, side, side, ch)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(3, 3, ch, ch)).astype(np.float32) * 0.05)
    conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
        x, w, (1, 1), "SAME", dimension_numbers=numbers)
    fwd = jax.jit(conv)
    # The backward pass a train step runs: input and kernel gradients.
    bwd = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    cases.append((lambda f=fwd, x=x, w=w: jax.block_until_ready(f(x, w))))
    cases.append((lambda f=bwd, x=x, w=w: jax.block_until_ready(f(x, w))))

  def run(calls):
    return {label: _time_calls(case, calls) for label, case in zip(_kernel_labels(), cases)}

  return run


def _torch_kernel_worker(seed: int):
  """run(calls) -> {label: median seconds} for torch.nn.Conv2d (NCHW)."""
  import torch

  torch.manual_seed(seed)
  cases = []
  for side, ch in KERNEL_SHAPES:
    conv = torch.nn.Conv2d(ch, ch, 3, padding=1, bias=False)
    x = torch.randn(KERNEL_BATCH, ch, side, side, requires_grad=True)

    def fwd(conv=conv, x=x):
      with torch.no_grad():
        conv(x)

    def bwd(conv=conv, x=x):
      x.grad = None
      conv.weight.grad = None
      (conv(x) ** 2).sum().backward()

    cases += [fwd, bwd]

  def run(calls):
    return {label: _time_calls(case, calls) for label, case in zip(_kernel_labels(), cases)}

  return run


def worker_main(args):
  if args.worker in ("torch", "torch_kernels"):
    import torch
    torch.set_num_threads(os.cpu_count())
  params = None
  if args.worker == "torch":
    run = _torch_worker(args.authors_code, args.seed)
  elif args.worker == "torch_kernels":
    run = _torch_kernel_worker(args.seed)
  elif args.worker == "jax_kernels":
    run = _jax_kernel_worker(args.seed)
  else:
    run, params = _jax_worker(args.shape, args.seed)[:2]
  run(2)  # compile / warm up
  print("ready", flush=True)
  for line in sys.stdin:
    if line.startswith("params "):  # every jax worker has run the same steps
      import numpy as np
      np.savez(line.split(" ", 1)[1].strip(), *params())
      print("[]", flush=True)
    else:
      print(json.dumps(run(int(line))), flush=True)


# ---------------------------------------------------------------- profile

def profile_main(args):
  """Per-op time of the compiled step from a jax.profiler (perfetto) trace."""
  import collections
  import glob
  import gzip
  import tempfile

  # The variant's flags, set here since this runs in the parent process:
  # XLA reads XLA_FLAGS when JAX starts its first backend, which is below.
  if args.profile not in VARIANTS:
    raise SystemExit(f"--profile: unknown {args.profile!r}; expected one of {list(VARIANTS)}")
  from zipfls_jax import xla_flags
  VARIANTS["default"] = " ".join(xla_flags.cpu_flags())
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS", ""), VARIANTS[args.profile]) if f)

  import jax

  run, _, step, data, box = _jax_worker(args.shape, args.seed)
  run(3)
  compiled_text = step.lower(box[0], data).compile().as_text()
  kinds = _op_kinds(compiled_text)
  with tempfile.TemporaryDirectory() as tmp:
    start = time.process_time(), time.perf_counter()
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      wall = sum(run(args.steps))
    cpu = time.process_time() - start[0]
    path = glob.glob(os.path.join(tmp, "**", "perfetto_trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  per_op = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in kinds:
      per_op[event["name"]] += event.get("dur", 0) / 1e6
  by_kind = collections.Counter()
  for op, seconds in per_op.items():
    by_kind[kinds[op]] += seconds
  total = sum(per_op.values())
  print(f"# variant {args.profile}, shape {args.shape}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}; "
        f"{args.steps} steps, {wall / args.steps * 1e3:.0f} ms/step wall; "
        f"process CPU time / wall = {cpu / wall:.2f} cores busy of {os.cpu_count()}; "
        f"op time summed over threads {total / args.steps * 1e3:.0f} ms/step")
  print("| op kind | ms/step | share of op time |\n|---|---|---|")
  for kind, seconds in by_kind.most_common():
    print(f"| {kind} | {seconds / args.steps * 1e3:.1f} | {100 * seconds / total:.1f}% |")
  # Ops whose trace events hold (almost) none of their time. With Eigen
  # convolutions (jaxlib 0.10) about half the convolutions record under
  # 1 ms/step: their work seems to run on the intra-op thread pool after
  # their event ends, so it is in the wall time (the step thread's
  # "ThunkExecutor::Execute (wait for completion)") but not in the table.
  counts = collections.Counter(kinds.values())
  silent = collections.Counter(kinds[op] for op in kinds
                               if per_op.get(op, 0.0) / args.steps < 1e-3)
  print(f"\n# op time summed / (wall x cores busy) = "
        f"{total / (wall * max(cpu / wall, 1e-9)):.2f}; ops under 1 ms/step in the trace "
        "(of that kind's ops in the step): "
        + ", ".join(f"{kind} {silent[kind]} of {counts[kind]}" for kind in counts
                    if kind.startswith(("convolution", "fusion", "dot", "copy"))))
  print("\n| top ops | kind | ms/step |\n|---|---|---|")
  for op, seconds in per_op.most_common(args.top):
    print(f"| {op} | {kinds[op]} | {seconds / args.steps * 1e3:.1f} |")


def _op_kinds(hlo_text: str) -> dict:
  """Maps each instruction of the entry computation to a coarse kind."""
  import re
  kinds = {}
  entry = hlo_text[hlo_text.index("ENTRY"):]
  for line in entry.splitlines()[1:]:
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*? (\w[\w\-]*)\(", line)
    if not match:
      continue
    name, opcode = match.groups()
    if opcode == "convolution":
      kind = "convolution (" + _conv_role(line) + ")"
    elif opcode == "fusion":
      kind = "fusion: " + _fusion_role(name, hlo_text)
    else:
      kind = opcode
    kinds[name] = kind
  return kinds


def _conv_role(line: str) -> str:
  # jax's transposes of a conv: the weight gradient has the batch in the
  # contracting (feature) position, 'b01f_01io->...' patterns differ.
  dims = line.split("dim_labels=")[1].split(",")[0] if "dim_labels=" in line else ""
  if dims.startswith("b01f_01io"):
    return "forward or input-grad"
  if dims.startswith("f01b"):
    return "weight-grad"
  return dims or "?"


def _fusion_role(name: str, hlo_text: str) -> str:
  import re
  match = re.search(r"%" + re.escape(name) + r" = .*?calls=%?([\w.\-]+)", hlo_text)
  if not match:
    return "?"
  body_start = hlo_text.find("%" + match.group(1) + " ")
  body = hlo_text[body_start:hlo_text.find("\n}", body_start)]
  for op in ("convolution", "dot", "reduce-window", "scatter", "gather", "sort", "reduce"):
    if f" {op}(" in body:
      return op
  return "elementwise"


# ---------------------------------------------------------------- parent

def _start(label, argv, env_flags):
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in (env.get("XLA_FLAGS", ""), env_flags) if f)
  env["ZIPFLS_JAX_XLA_FLAGS"] = "0"  # the variant's flags only
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  proc = subprocess.Popen([sys.executable, "-m", "benchmarks.step_speed", *argv],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
  line = proc.stdout.readline()
  if line.strip() != "ready":
    raise RuntimeError(f"worker {label} failed to start (got {line!r})")
  return proc


def _start_variants(args, worker_argv):
  """(variant names, {name: worker process}), one worker per --variants entry."""
  from zipfls_jax import xla_flags
  VARIANTS["default"] = " ".join(xla_flags.cpu_flags())
  names = args.variants.split(",")
  workers = {}
  for name in names:
    if name not in VARIANTS:
      raise SystemExit(f"--variants: unknown {name!r}; expected some of {list(VARIANTS)}")
    workers[name] = _start(name, [*worker_argv, "--seed", str(args.seed)], VARIANTS[name])
  return names, workers


def compare(args):
  names, workers = _start_variants(args, ["--worker", "jax", "--shape", args.shape])
  if args.authors_code:
    workers["authors_pytorch"] = _start("authors", ["--worker", "torch", "--authors_code",
                                                    args.authors_code], "")
  rounds = {name: [] for name in workers}
  for _ in range(args.rounds):
    for name, proc in workers.items():
      proc.stdin.write(f"{args.steps}\n")
      proc.stdin.flush()
      times = json.loads(proc.stdout.readline())
      rounds[name].append(statistics.median(times))
  # Same init, batch and number of steps in every jax worker: their
  # parameters differ only by the variants' float32 rounding.
  import tempfile
  import numpy as np
  diffs = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, proc in workers.items():
      if name in VARIANTS:
        proc.stdin.write(f"params {tmp}/{name}.npz\n")
        proc.stdin.flush()
        proc.stdout.readline()
    ref = np.load(f"{tmp}/{base_name(names)}.npz")
    for name in names[1:]:
      other = np.load(f"{tmp}/{name}.npz")
      diffs[name] = max(float(np.max(np.abs(ref[k] - other[k])) / (np.max(np.abs(ref[k])) + 1e-12))
                        for k in ref.files)
  for proc in workers.values():
    proc.stdin.close()
    proc.wait()
  batch = SHAPES[args.shape][4]
  base = base_name(names)
  steps_done = 2 + args.rounds * args.steps
  print(f"# shape {args.shape} (batch {batch}), {args.rounds} rounds x {args.steps} steps, "
        f"load before/after: {args.load_before} / {_load()}")
  print(f"| variant | XLA_FLAGS | images/s (median round) | min-max | ratio to {base} "
        f"(median of per-round ratios) | ratio min-max |")
  print("|---|---|---|---|---|---|")
  for name in workers:
    per_round = [batch / t for t in rounds[name]]
    ratios = [b / t for b, t in zip(rounds[base], rounds[name])]
    flags = VARIANTS.get(name, "(torch)") or "(jax default)"
    print(f"| {name} | `{flags}` | {statistics.median(per_round):.1f} | "
          f"{min(per_round):.1f}-{max(per_round):.1f} | {statistics.median(ratios):.3f} | "
          f"{min(ratios):.3f}-{max(ratios):.3f} |", flush=True)
  for name, diff in diffs.items():
    print(f"# params after {steps_done} steps, {name} vs {base}: max over arrays of "
          f"max|diff| / max|param| = {diff:.2e}")


def kernels(args):
  """Convolution kernels alone, per variant and PyTorch, rounds interleaved."""
  names, workers = _start_variants(args, ["--worker", "jax_kernels"])
  try:
    import torch  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
    workers["pytorch"] = _start("pytorch", ["--worker", "torch_kernels",
                                            "--seed", str(args.seed)], "")
  except ImportError:
    print("# torch is not importable: PyTorch's kernels are skipped")
  rounds = {name: [] for name in workers}
  for _ in range(args.rounds):
    for name, proc in workers.items():
      proc.stdin.write(f"{args.steps}\n")
      proc.stdin.flush()
      rounds[name].append(json.loads(proc.stdout.readline()))
  for proc in workers.values():
    proc.stdin.close()
    proc.wait()
  print(f"# convolution kernels, batch {KERNEL_BATCH}, 3x3 stride 1, float32; milliseconds, "
        f"median over {args.rounds} rounds of the median of {args.steps} calls; "
        f"load before/after: {args.load_before} / {_load()}")
  print("| kernel | " + " | ".join(workers) + " | " +
        " | ".join(f"{n} / pytorch" for n in names if "pytorch" in workers) + " |")
  print("|---|" + "---|" * (len(workers) + (len(names) if "pytorch" in workers else 0)))
  for label in _kernel_labels():
    ms = {name: 1e3 * statistics.median(r[label] for r in rounds[name]) for name in workers}
    # Per-round ratios, so that drifting load cancels; their median and spread.
    ratios = []
    if "pytorch" in workers:
      for name in names:
        per_round = [a[label] / b[label] for a, b in zip(rounds[name], rounds["pytorch"])]
        ratios.append(f"{statistics.median(per_round):.2f} "
                      f"({min(per_round):.2f}-{max(per_round):.2f})")
    print(f"| {label} | " + " | ".join(f"{ms[n]:.1f}" for n in workers) + " | " +
          " | ".join(ratios) + " |", flush=True)


def base_name(names):
  return names[0]


def _load():
  return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", choices=sorted(SHAPES), default="cifar")
  parser.add_argument("--variants", default="none,default")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--steps", type=int, default=3, help="steps per round")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--authors_code", default=None,
                      help="the authors' pytorch_zipfls folder; adds their step (cifar shape)")
  parser.add_argument("--profile", default=None, metavar="VARIANT",
                      help="print the per-op breakdown of this variant's step")
  parser.add_argument("--kernels", action="store_true",
                      help="time the convolutions alone (calls per round: --steps)")
  parser.add_argument("--top", type=int, default=15)
  parser.add_argument("--worker", choices=("jax", "torch", "jax_kernels", "torch_kernels"),
                      default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  args.load_before = _load()
  if args.worker:
    worker_main(args)
  elif args.profile:
    profile_main(args)
  elif args.kernels:
    kernels(args)
  else:
    if args.authors_code:
      try:
        import torch  # noqa: F401  pylint: disable=unused-import,g-import-not-at-top
      except ImportError:
        print("# torch is not importable: the authors' step is skipped")
        args.authors_code = None
    compare(args)


if __name__ == "__main__":
  main()
