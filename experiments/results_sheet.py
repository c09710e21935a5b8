r"""The results table of docs/method.md section 7 from finished workdirs, and their curves.

    python -m experiments.results_sheet workdirs/* --plot=curves.png

Each argument is a run's workdir (it holds `config.json` and
`metrics.jsonl`) or a folder of such workdirs. Runs are grouped by dataset,
model and method; seeds of one group give the mean +- std (sample std, as
over the paper's runs) of the best top-1 over evaluations, printed as a
Markdown table with the paper's numbers beside ours. `--plot` draws eval
top-1 against epoch for every run, one panel per dataset and model.

Every evaluation also fitted a power law to the model's ranked predictions
(`zipfls_jax.zipf_law`). The sheet prints each run's last fit beside its
top-1, and `--zipf_plot` draws, per dataset and model, the last mean ranked
curve of each run on log-log axes (the paper's CE vs Zipf's LS figure) and
the exponent and R^2 across training.

It also prints the paper's comparison of methods (TinyImageNet, CIFAR
ResNet18): each method's published gain and stated cost beside ours when
the runs exist, with the measured cost of each method's step relative to
CE; `--comparison_plot` draws gain against cost, one point per method.
"""
from __future__ import annotations

import collections
import os
import statistics
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
from etils import epath

from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import metrics as metrics_lib

_PLOT = flags.DEFINE_string("plot", None, "Where to write the curves as a PNG (optional).")
_ZIPF_PLOT = flags.DEFINE_string(
    "zipf_plot", None, "Where to write the ranked-prediction (Zipf's law) plots as a PNG "
    "(optional).")

_COMPARISON_PLOT = flags.DEFINE_string(
    "comparison_plot", None, "Where to write the comparison's gain-against-cost plot as a PNG "
    "(optional).")

# docs/method.md section 7: (dataset, model, method) -> (PyTorch, MegEngine) top-1 %.
PAPER = {
    ("cifar100", "cifar_densenet121", "ce"): ("77.86 ± 0.26", "77.97 ± 0.18"),
    ("cifar100", "cifar_densenet121", "zipf"): ("79.03 ± 0.32", "79.85 ± 0.27"),
    ("tiny_imagenet", "cifar_densenet121", "ce"): ("60.31 ± 0.36", "60.78 ± 0.31"),
    ("tiny_imagenet", "cifar_densenet121", "zipf"): ("62.64 ± 0.30", "62.35 ± 0.32"),
    ("cifar100", "cifar_resnet18", "ce"): ("75.51 ± 0.28", "75.29 ± 0.29"),
    ("cifar100", "cifar_resnet18", "zipf"): ("77.38 ± 0.32", "77.08 ± 0.28"),
    ("tiny_imagenet", "cifar_resnet18", "ce"): ("56.41 ± 0.20", "56.03 ± 0.34"),
    ("tiny_imagenet", "cifar_resnet18", "zipf"): ("59.25 ± 0.20", "59.01 ± 0.23"),
    ("i_naturalist2021", "resnet50", "zipf"): ("+3.61 over CE", "-"),
}

# The paper's comparison of methods (docs/method.md section 7): ResNet18 on
# TinyImageNet, each method's top-1 gain over the 56.4 baseline, and the
# training cost the paper states (iterations, memory, relative to CE; None
# where it states none).
COMPARISON_CELL = ("tiny_imagenet", "cifar_resnet18")
PAPER_BASELINE_TOP1 = 56.4
PAPER_GAINS = {"ls": 0.5, "tf_kd": 0.3, "byot": 1.4, "cs_kd": 2.0, "ps_kd": 2.0, "ddgsd": 2.1,
               "ban": 2.2, "zipf": 2.8}
PAPER_COSTS = {"ban": (2, 2), "cs_kd": (2, 1), "ddgsd": (2, 2), "zipf": (1, 1)}
# What each method's train step costs relative to CE's, measured by
# `python -m benchmarks.method_costs --reps=5` (CIFAR ResNet18, batch 128,
# 32x32, 100 classes, each method's CIFAR-100 settings; 2026-12-02 on an
# idle 2-core x86_64 CPU; benchmarks/RESULTS.md): (XLA flops, compiled
# memory, step time). Flops and memory are the compiler's, exact; step time
# is the median of 5 interleaved rounds, on a CPU.
MEASURED_COSTS: Dict[str, tuple] = {
    "ce": (1.000, 1.000, 1.000), "ls": (1.000, 1.000, 0.993),
    "zipf": (1.002, 1.021, 0.998), "tf_kd": (1.000, 1.000, 0.991),
    "cs_kd": (0.667, 0.572, 0.622), "bake": (1.000, 1.000, 1.010),
    "ddgsd": (2.000, 1.870, 2.600), "byot": (1.107, 1.324, 1.844),
    "ols": (1.000, 1.000, 1.013), "ps_kd": (1.000, 1.025, 1.002),
    "ban": (1.332, 1.044, 1.269),
}
for _method, _gain in PAPER_GAINS.items():
  # The plain table shows the comparison's published numbers too.
  PAPER.setdefault((*COMPARISON_CELL, _method),
                   (f"{PAPER_BASELINE_TOP1 + _gain:.1f} (+{_gain})", "-"))

DATASET_NAMES = {"cifar100": "CIFAR-100", "tiny_imagenet": "TinyImageNet",
                 "imagenet2012": "ImageNet", "i_naturalist2021": "iNat21 mini",
                 "fashion_mnist": "Fashion-MNIST"}
METHOD_NAMES = {"ce": "CE", "ls": "LS", "zipf": "Zipf's LS", "ls_zipf": "LS to Zipf",
                "tf_kd": "TF-KD", "cs_kd": "CS-KD", "bake": "BAKE", "ddgsd": "DDGSD",
                "byot": "BYOT", "ols": "OLS", "ps_kd": "PS-KD", "ban": "BAN"}


def method_label(config: Dict) -> str:
  """'ce', 'ls', 'zipf', or 'zipf[...]' naming what differs from the paper's Zipf LS."""
  loss = config["loss"]
  method = loss["method"]
  if method not in ("zipf", "ls_zipf"):
    return method
  changes = []
  if loss.get("distribution", "zipf") != "zipf":
    changes.append(loss["distribution"])
  if loss.get("rank_by", "votes") != "votes":
    changes.append(f"rank by {loss['rank_by']}")
  if loss.get("correct_only"):
    changes.append("correct only")
  if config.get("exits"):
    changes.append("exits")
  return f"{method}[{', '.join(changes)}]" if changes else method


def load_run(workdir: str) -> Optional[Dict]:
  """A run's config, its evaluations and best top-1; None if it has none yet.

  Reads through `etils.epath` (a gs:// workdir works); lines of
  metrics.jsonl that do not parse are skipped with a warning.
  """
  try:
    config = checkpoint_lib.read_workdir_config(workdir)
  except ValueError as error:  # names the file
    logging.warning("Skipping %s: %s", workdir, error)
    return None
  if config is None:
    return None
  evals = {}
  for record in metrics_lib.read_metrics(workdir):
    if "eval_top1" in record:
      evals[record["step"]] = record  # a resumed run may repeat a step
  if not evals:
    return None
  evals = [evals[step] for step in sorted(evals)]
  return {"workdir": workdir, "config": config, "evals": evals,
          "best_top1": max(e["eval_top1"] for e in evals),
          "key": (config["dataset"], config["model"], method_label(config))}


def _flatten(config: Dict, prefix: str = "") -> Dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _mark_variants(runs: List[Dict]) -> None:
  """Appends '{key=value, ...}' to the method of runs whose configs differ.

  Runs of one table cell may differ only by seed (and by keys that do not
  change what is computed); otherwise each variant gets its own row, named
  by the keys that vary.
  """
  ignored = {"seed", *config_lib.RESUMABLE_KEYS}
  groups = collections.defaultdict(list)
  for run in runs:
    groups[run["key"]].append(run)
  for key, members in groups.items():
    flats = [{k: v for k, v in _flatten(r["config"]).items() if k not in ignored}
             for r in members]
    varying = sorted({k for f in flats for k in f if any(g.get(k) != f.get(k) for g in flats)})
    if not varying:
      continue
    for run, flat in zip(members, flats):
      detail = ", ".join(f"{k}={flat.get(k)}" for k in varying)
      run["key"] = (*key[:2], f"{key[2]} {{{detail}}}")


def find_runs(paths: Sequence[str]) -> List[Dict]:
  """Runs in `paths`: each a workdir or a folder of workdirs (local or gs://)."""
  runs = []
  for path in paths:
    folder = epath.Path(path)
    if (folder / checkpoint_lib.CONFIG_FILE).exists():
      candidates = [path]
    elif folder.is_dir():
      candidates = [os.fspath(p) for p in sorted(folder.iterdir())]
    else:
      raise FileNotFoundError(f"{path!r} is neither a run's workdir (no config.json) nor a "
                              "folder.")
    for candidate in candidates:
      run = load_run(candidate)
      if run is not None:
        runs.append(run)
  _mark_variants(runs)
  return runs


def mean_std(values: Sequence[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.2f}"
  return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown_table(runs: Sequence[Dict]) -> str:
  """One row per dataset, model and method: ours over seeds, the paper's beside."""
  groups = collections.defaultdict(list)
  for run in runs:
    groups[run["key"]].append(run["best_top1"])
  lines = ["| dataset | model | method | runs | best top-1 % (ours) | paper (PyTorch) "
           "| paper (MegEngine) |",
           "|---|---|---|---|---|---|---|"]
  for key in sorted(groups):
    dataset, model, method = key
    base_method = method.split(" {")[0].split("[")[0]
    paper = PAPER.get(key, ("-", "-")) if method == base_method else ("-", "-")
    name = METHOD_NAMES.get(base_method, base_method) + method[len(base_method):]
    lines.append(f"| {DATASET_NAMES.get(dataset, dataset)} | {model} | {name} | "
                 f"{len(groups[key])} | {mean_std(groups[key])} | {paper[0]} | {paper[1]} |")
  return "\n".join(lines)


def _comparison_top1(runs: Sequence[Dict]) -> Dict[str, List[float]]:
  """Best top-1 of each plain method's runs on the comparison cell, by method."""
  top1 = collections.defaultdict(list)
  for run in runs:
    dataset, model, method = run["key"]
    if (dataset, model) == COMPARISON_CELL and method in METHOD_NAMES:
      top1[method].append(run["best_top1"])
  return top1


def comparison_table(runs: Sequence[Dict]) -> str:
  """The paper's comparison of methods beside ours, with what each costs.

  One row per method, in the paper's order of gains: its published gain
  over CE and stated cost, then ours from the runs found on the comparison
  cell (TinyImageNet, CIFAR ResNet18; mean ± std of best top-1 over seeds,
  and its gain over our CE runs' mean), and the measured cost of its step
  relative to CE (`MEASURED_COSTS`).
  """
  top1 = _comparison_top1(runs)
  ce = statistics.mean(top1["ce"]) if top1.get("ce") else None
  lines = ["| method | paper gain | paper cost (iterations, memory) | our runs | our best top-1 % "
           "| our gain | flops | memory | step time |",
           "|---|---|---|---|---|---|---|---|---|"]
  methods = ["ce"] + sorted(PAPER_GAINS, key=PAPER_GAINS.get) + sorted(
      m for m in METHOD_NAMES if m not in PAPER_GAINS and m != "ce")
  for method in methods:
    gain = "0 (56.4)" if method == "ce" else (
        f"+{PAPER_GAINS[method]}" if method in PAPER_GAINS else "-")
    stated = PAPER_COSTS.get(method)
    stated = f"{stated[0]}x, {stated[1]}x" if stated else ("1x, 1x" if method == "ce" else "-")
    ours = top1.get(method, [])
    our_gain = (f"{statistics.mean(ours) - ce:+.2f}" if ours and ce is not None and method != "ce"
                else "-")
    costs = MEASURED_COSTS.get(method)
    cost_cells = " | ".join(f"{c:.2f}x" for c in costs) if costs else "- | - | -"
    name = METHOD_NAMES.get(method, method)
    lines.append(f"| {name} | {gain} | {stated} | {len(ours)} | "
                 f"{mean_std(ours) if ours else '-'} | {our_gain} | {cost_cells} |")
  return "\n".join(lines)


def plot_comparison(runs: Sequence[Dict], path: str) -> None:
  """Accuracy gain against training cost, one point per method.

  Hollow markers: the paper's gains at the iterations it states (1x where
  it states none). Filled: our measured step time relative to CE against
  our gain over our CE runs, where runs of both exist.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  top1 = _comparison_top1(runs)
  ce = statistics.mean(top1["ce"]) if top1.get("ce") else None
  fig, ax = plt.subplots(figsize=(7, 5))
  for index, (method, gain) in enumerate(sorted(PAPER_GAINS.items(), key=lambda kv: kv[1])):
    colour = f"C{index}"
    name = METHOD_NAMES.get(method, method)
    cost = PAPER_COSTS.get(method, (1, 1))[0]
    ax.scatter([cost], [gain], facecolors="none", edgecolors=colour, s=70,
               label=f"{name} (paper)")
    if ce is not None and top1.get(method) and method in MEASURED_COSTS:
      ax.scatter([MEASURED_COSTS[method][2]], [statistics.mean(top1[method]) - ce], color=colour,
                 s=70, label=f"{name} (ours)")
  ax.axhline(0.0, color="grey", linewidth=0.8)
  ax.set_xlabel("training cost per step, relative to CE (paper: iterations; ours: step time)")
  ax.set_ylabel("top-1 gain over CE (points)")
  ax.set_title("TinyImageNet, CIFAR ResNet18: gain against cost")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_curves(runs: Sequence[Dict], path: str) -> None:
  """Eval top-1 against epoch, one panel per (dataset, model), one line per run."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = sorted({run["key"][:2] for run in runs})
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
  colours = {}
  for ax, panel in zip(axes[0], panels):
    for run in runs:
      if run["key"][:2] != panel:
        continue
      method = run["key"][2]
      colour = colours.setdefault(method, f"C{len(colours)}")
      seed = run["config"].get("seed", 0)
      ax.plot([e["epoch"] for e in run["evals"]], [e["eval_top1"] for e in run["evals"]],
              color=colour, marker="o", markersize=3,
              label=f"{METHOD_NAMES.get(method, method)} (seed {seed}, best "
                    f"{run['best_top1']:.2f})")
    ax.set_title(f"{DATASET_NAMES.get(panel[0], panel[0])}, {panel[1]}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("eval top-1 %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def _zipf_value(run: Dict, key: str) -> str:
  value = run["evals"][-1].get(key)
  return "-" if value is None else f"{value:.3f}"


def zipf_table(runs: Sequence[Dict]) -> str:
  """One row per run: its top-1 beside the power-law fit of its last evaluation.

  The exponent s and R^2 of `log p(r) = a - s log r` fitted to the mean
  ranked softmax over all classes, and over the non-target classes (see
  `zipfls_jax.zipf_law`). Runs logged before these fits existed show '-'.
  """
  lines = ["| dataset | model | method | seed | best top-1 % | last top-1 % | Zipf exponent "
           "| R² | non-target exponent | non-target R² |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for run in sorted(runs, key=lambda r: (r["key"], r["config"].get("seed", 0))):
    dataset, model, method = run["key"]
    base_method = method.split(" {")[0].split("[")[0]
    name = METHOD_NAMES.get(base_method, base_method) + method[len(base_method):]
    lines.append(
        f"| {DATASET_NAMES.get(dataset, dataset)} | {model} | {name} | "
        f"{run['config'].get('seed', 0)} | {run['best_top1']:.2f} | "
        f"{run['evals'][-1]['eval_top1']:.2f} | {_zipf_value(run, 'eval_zipf_exponent')} | "
        f"{_zipf_value(run, 'eval_zipf_r2')} | "
        f"{_zipf_value(run, 'eval_zipf_nontarget_exponent')} | "
        f"{_zipf_value(run, 'eval_zipf_nontarget_r2')} |")
  return "\n".join(lines)


def plot_zipf_law(runs: Sequence[Dict], path: str) -> None:
  """Per (dataset, model): the last ranked curves on log-log axes, and the fits in training.

  Left: each run's mean ranked softmax at its last saved evaluation, solid
  over all classes and dashed over the non-target classes, one colour per
  method. Middle and right: the exponent and R^2 of the all-class (solid)
  and non-target (dashed) fits at every evaluation.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training import zipf_curves  # pylint: disable=g-import-not-at-top
  panels = sorted({run["key"][:2] for run in runs})
  fig, axes = plt.subplots(len(panels), 3, figsize=(16, 4.5 * len(panels)), squeeze=False)
  colours = {}
  for row, panel in zip(axes, panels):
    curve_ax, exponent_ax, r2_ax = row
    for run in runs:
      if run["key"][:2] != panel:
        continue
      method = run["key"][2]
      colour = colours.setdefault(method, f"C{len(colours)}")
      base = method.split(" {")[0].split("[")[0]
      label = (METHOD_NAMES.get(base, base) + method[len(base):]
               + f" (seed {run['config'].get('seed', 0)})")
      curves = zipf_curves.read_curves(run["workdir"])
      if curves:
        step, ranked = list(curves.items())[-1]
        fits = zipf_curves.fit_scalars(ranked)
        mean = np.asarray(ranked.mean())
        curve_ax.loglog(np.arange(1, mean.size + 1), mean, color=colour,
                        label=f"{label}, step {step}: s={fits['eval_zipf_exponent']:.2f}, "
                              f"R²={fits['eval_zipf_r2']:.3f}")
        nontarget = np.asarray(ranked.mean(nontarget=True))
        curve_ax.loglog(np.arange(1, nontarget.size + 1), nontarget, color=colour,
                        linestyle="--")
      epochs = [e["epoch"] for e in run["evals"] if "eval_zipf_exponent" in e]
      for key, ax in (("exponent", exponent_ax), ("r2", r2_ax)):
        for kind, style in (("zipf", "-"), ("zipf_nontarget", "--")):
          values = [e[f"eval_{kind}_{key}"] for e in run["evals"] if "eval_zipf_exponent" in e]
          ax.plot(epochs, values, color=colour, linestyle=style, marker="o", markersize=3,
                  label=label if kind == "zipf" else None)
    title = f"{DATASET_NAMES.get(panel[0], panel[0])}, {panel[1]}"
    curve_ax.set_title(f"{title}: mean ranked softmax\n(dashed: non-target classes)")
    curve_ax.set_xlabel("rank")
    curve_ax.set_ylabel("mean probability")
    exponent_ax.set_title("Zipf exponent s of the fit (dashed: non-target)")
    exponent_ax.set_ylabel("s")
    r2_ax.set_title("R² of the log-log fit (dashed: non-target)")
    r2_ax.set_ylabel("R²")
    for ax in row:
      ax.grid(alpha=0.3, which="both")
      ax.legend(fontsize=7)
    for ax in row[1:]:
      ax.set_xlabel("epoch")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give one or more workdirs (or folders of workdirs).")
  runs = find_runs(paths)
  if not runs:
    raise SystemExit(f"No finished evaluations found in {paths}.")
  print(markdown_table(runs))
  print("\nThe paper's comparison of methods (TinyImageNet, CIFAR ResNet18), with each "
        "method's cost relative to CE:\n")
  print(comparison_table(runs))
  print("\nZipf's law of the ranked predictions, at each run's last evaluation:\n")
  print(zipf_table(runs))
  if _PLOT.value:
    plot_curves(runs, _PLOT.value)
    print(f"Curves written to {_PLOT.value}")
  if _COMPARISON_PLOT.value:
    plot_comparison(runs, _COMPARISON_PLOT.value)
    print(f"Gain against cost written to {_COMPARISON_PLOT.value}")
  if _ZIPF_PLOT.value:
    plot_zipf_law(runs, _ZIPF_PLOT.value)
    print(f"Ranked-prediction plots written to {_ZIPF_PLOT.value}")


if __name__ == "__main__":
  app.run(main)
