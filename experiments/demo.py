r"""`make demo`: CE vs label smoothing vs Zipf's LS on Fashion-MNIST, offline.

    python -m experiments.demo --workdir=demo_workdir

Prepares Fashion-MNIST in the tfds data dir (from tfds when online, else
from Debian's `dataset-fashion-mnist` IDX files; if neither works it prints
what to do), trains the small CIFAR-style ResNet of
`experiments/configs/fashion_mnist_demo.py` once per method, prints the
comparison table and writes the curves to `<workdir>/curves.png` and the
table to `<workdir>/results.md`. It also prints each method's Zipf's-law fit
(the exponent and R^2 of its mean ranked predictions, `zipfls_jax.zipf_law`)
beside its top-1 and draws the ranked curves on log-log axes in
`<workdir>/zipf_law.png`. It prints when XLA compiles, an ETA for
all runs, and at the end where the time went (data, setup, compile, train
steps, evaluation); the measured times are in benchmarks/RESULTS.md
("make demo"). Rerunning resumes (finished runs are only reported), and
reuses the compiled programs cached in `<workdir>/xla_cache`.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "demo_workdir", "Where the runs, table and plot go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds's default).")
_METHODS = flags.DEFINE_list("methods", ["ce", "ls", "zipf"], "Methods to compare.")
_STEPS = flags.DEFINE_integer("steps", 0, "Train steps per method (0 = the config's).")
_ALLOW_APT = flags.DEFINE_bool(
    "allow_apt", True, "When run as root and Fashion-MNIST is nowhere to be found, install "
    "the Debian package dataset-fashion-mnist with apt-get (the demo says so when it does).")

_APT_TIMEOUT_S = 180


def install_debian_fashion_mnist() -> bool:
  """apt-get installs the Debian package holding Fashion-MNIST; False if impossible.

  Only the demo does this, and only as root: the library itself never runs a
  package manager (`zipfls_jax.data.prepare_fashion_mnist` says what to
  install instead).
  """
  from zipfls_jax.data import fashion_mnist  # pylint: disable=g-import-not-at-top
  if shutil.which("apt-get") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
    return False
  package = fashion_mnist.DEBIAN_PACKAGE
  print(f"== Installing the Debian package {package} with apt-get, because this runs as root "
        "(pass --noallow_apt to the demo to stop this)", flush=True)
  install = ["apt-get", "install", "-y", "-q", package]
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  # Without `apt-get update` first when the package lists already know it.
  for commands in ([install], [["apt-get", "update", "-q"], install]):
    try:
      if all(subprocess.run(command, env=env, capture_output=True, timeout=_APT_TIMEOUT_S,
                            check=False).returncode == 0 for command in commands):
        return fashion_mnist.find_idx_files(fashion_mnist.DEBIAN_DIR) is not None
    except subprocess.TimeoutExpired:
      return False
  return False


def prepare_data(data_dir, *, allow_apt: bool):
  """Fashion-MNIST's tfds folder; exits with the library's instructions if impossible."""
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  try:
    return data.prepare_fashion_mnist(data_dir)
  except FileNotFoundError as error:
    if allow_apt and install_debian_fashion_mnist():
      return data.prepare_fashion_mnist(data_dir)
    print(f"\nCannot get Fashion-MNIST:\n{error}", file=sys.stderr)
    sys.exit(1)


def format_breakdown(seconds) -> str:
  """'compile 12 s, train steps 80 s, ...' from a run's (or the sum's) phase seconds."""
  other = seconds["total"] - sum(v for k, v in seconds.items() if k != "total")
  parts = [("setup", seconds.get("setup", 0.0)), ("compile", seconds.get("compile", 0.0)),
           ("train steps", other), ("evaluation", seconds.get("eval", 0.0))]
  return ", ".join(f"{name} {value:.0f} s" for name, value in parts)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help is instant. XLA:CPU flags for a faster
  # train step go in before JAX starts (zipfls_jax/xla_flags.py says which
  # and why; ZIPFLS_JAX_XLA_FLAGS=0 for none).
  from zipfls_jax import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.configure()
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import results_sheet  # pylint: disable=g-import-not-at-top
  from experiments.configs import fashion_mnist_demo  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training import loop  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training.metrics import console  # pylint: disable=g-import-not-at-top

  methods = _METHODS.value
  unknown = [m for m in methods if m not in results_sheet.METHOD_NAMES]
  if unknown:
    # Before any training, not after the first method's run.
    raise app.UsageError(f"--methods has unknown {unknown}; expected a subset of "
                         f"{list(results_sheet.METHOD_NAMES)}.")
  if "ban" in methods and ("ce" not in methods or methods.index("ce") > methods.index("ban")):
    raise app.UsageError("--methods: 'ban' distils the demo's CE run; list 'ce' before it, "
                         "e.g. --methods=ce,zipf,ban.")
  logging.set_verbosity(logging.ERROR)  # our own lines only, not the libraries'
  start = time.perf_counter()
  workdir = os.path.abspath(_WORKDIR.value)
  # The three methods share the model, so its initialisation and its eval
  # step compile to the same programs: XLA's persistent cache compiles each
  # once, and a rerun of the demo compiles nothing.
  jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  console(f"== Zipf's LS demo: Fashion-MNIST, methods {', '.join(methods)}; "
          f"results in {workdir}")
  path = prepare_data(_DATA_DIR.value or None, allow_apt=_ALLOW_APT.value)
  data_seconds = time.perf_counter() - start
  console(f"== Fashion-MNIST ready in {path} ({data_seconds:.0f} s)")

  totals = {}
  for index, method in enumerate(methods):
    config = fashion_mnist_demo.get_config(method)
    if method == "ban":
      config.teacher.workdir = os.path.join(workdir, "ce")  # born again from the CE run
    config.data_dir = _DATA_DIR.value
    if _STEPS.value > 0:
      config.num_train_steps = _STEPS.value
    name = results_sheet.METHOD_NAMES[method]
    console(f"\n== Training with {name} ({index + 1} of {len(methods)}: {config.model}, "
            f"{config.num_train_steps} steps of {config.batch_size} images)")
    summary = loop.train_and_evaluate(config, os.path.join(workdir, method),
                                      runs_after=len(methods) - index - 1)
    seconds = summary["seconds"]
    for key, value in seconds.items():
      totals[key] = totals.get(key, 0.0) + value
    console(f"== {name}: best top-1 {summary['best_top1']:.2f}% in {seconds['total']:.0f} s "
            f"({format_breakdown(seconds)})")

  runs = results_sheet.find_runs([os.path.join(workdir, m) for m in methods])
  table = results_sheet.markdown_table(runs)
  plot = os.path.join(workdir, "curves.png")
  results_sheet.plot_curves(runs, plot)
  zipf_table = results_sheet.zipf_table(runs)
  zipf_plot = os.path.join(workdir, "zipf_law.png")
  results_sheet.plot_zipf_law(runs, zipf_plot)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("# Fashion-MNIST demo: best top-1 on the 10,000 test images\n\n" + table + "\n"
            "\n## Zipf's law of the ranked predictions (last evaluation)\n\n" + zipf_table + "\n")
  console("\n" + table)
  console("\nZipf's law of the ranked predictions (power-law fit at the last evaluation):\n")
  console(zipf_table)
  console(f"\nTable: {os.path.join(workdir, 'results.md')}\nCurves: {plot}\n"
          f"Ranked predictions (log-log): {zipf_plot}\n"
          f"Total time {time.perf_counter() - start:.0f} s: data {data_seconds:.0f} s; "
          f"the {len(methods)} runs {totals.get('total', 0.0):.0f} s "
          f"({format_breakdown(totals) if totals else 'nothing to do'})")


if __name__ == "__main__":
  app.run(main)
