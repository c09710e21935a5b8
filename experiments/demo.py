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
`<workdir>/zipf_law.png`. About 4-5 minutes on 2 CPU cores.
Rerunning resumes (finished runs are only reported).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "demo_workdir", "Where the runs, table and plot go.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "tfds data dir ('' = tfds's default).")
_METHODS = flags.DEFINE_list("methods", ["ce", "ls", "zipf"], "Methods to compare.")
_STEPS = flags.DEFINE_integer("steps", 0, "Train steps per method (0 = the config's).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help is instant. XLA:CPU flags for a faster
  # train step go in before JAX starts (zipfls_jax/xla_flags.py says which
  # and why; ZIPFLS_JAX_XLA_FLAGS=0 for none).
  from zipfls_jax import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.configure()
  from experiments import results_sheet  # pylint: disable=g-import-not-at-top
  from experiments.configs import fashion_mnist_demo  # pylint: disable=g-import-not-at-top
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training import loop  # pylint: disable=g-import-not-at-top

  unknown = [m for m in _METHODS.value if m not in results_sheet.METHOD_NAMES]
  if unknown:
    # Before any training, not after the first method's run.
    raise app.UsageError(f"--methods has unknown {unknown}; expected a subset of "
                         f"{list(results_sheet.METHOD_NAMES)}.")
  logging.set_verbosity(logging.ERROR)  # our own lines only, not the libraries'
  start = time.perf_counter()
  workdir = os.path.abspath(_WORKDIR.value)
  print(f"== Zipf's LS demo: Fashion-MNIST, methods {', '.join(_METHODS.value)}; "
        f"results in {workdir}", flush=True)
  try:
    path = data.prepare_fashion_mnist(_DATA_DIR.value or None)
  except FileNotFoundError as error:
    print(f"\nCannot get Fashion-MNIST:\n{error}", file=sys.stderr)
    sys.exit(1)
  print(f"== Fashion-MNIST ready in {path} ({time.perf_counter() - start:.0f} s)", flush=True)

  for method in _METHODS.value:
    config = fashion_mnist_demo.get_config()
    config.loss.method = method
    config.data_dir = _DATA_DIR.value
    if _STEPS.value > 0:
      config.num_train_steps = _STEPS.value
    run_start = time.perf_counter()
    print(f"\n== Training with {results_sheet.METHOD_NAMES[method]} "
          f"({config.model}, {config.num_train_steps} steps of {config.batch_size})", flush=True)
    summary = loop.train_and_evaluate(config, os.path.join(workdir, method))
    print(f"== {results_sheet.METHOD_NAMES[method]}: best top-1 {summary['best_top1']:.2f}% "
          f"({time.perf_counter() - run_start:.0f} s)", flush=True)

  runs = results_sheet.find_runs([os.path.join(workdir, m) for m in _METHODS.value])
  table = results_sheet.markdown_table(runs)
  plot = os.path.join(workdir, "curves.png")
  results_sheet.plot_curves(runs, plot)
  zipf_table = results_sheet.zipf_table(runs)
  zipf_plot = os.path.join(workdir, "zipf_law.png")
  results_sheet.plot_zipf_law(runs, zipf_plot)
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("# Fashion-MNIST demo: best top-1 on the 10,000 test images\n\n" + table + "\n"
            "\n## Zipf's law of the ranked predictions (last evaluation)\n\n" + zipf_table + "\n")
  print("\n" + table)
  print("\nZipf's law of the ranked predictions (power-law fit at the last evaluation):\n")
  print(zipf_table)
  print(f"\nTable: {os.path.join(workdir, 'results.md')}\nCurves: {plot}\n"
        f"Ranked predictions (log-log): {zipf_plot}\n"
        f"Total time {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
  app.run(main)
