r"""Zipf's law of a model's ranked predictions, measured without training.

    # A run's latest checkpoint, on its dataset's evaluation split:
    python -m experiments.zipf_law --workdir=workdirs/cifar100_resnet18_zipf_s0
    # What chance alone gives: random logits, random labels.
    python -m experiments.zipf_law --toy=gaussian --n=1000 --c=1000
    python -m experiments.zipf_law --toy=uniform --n=1000 --c=1000

Both print the power-law fit `log p(r) = a - s log r` (`zipfls_jax.zipf_law`)
of the mean ranked softmax, over all examples and split into correctly and
wrongly classified ones, for all classes and for the non-target classes
(target removed, the rest renormalised), and plot the curves on log-log
axes with the fitted lines (`--plot`, default `zipf_law.png`). The toy mode
also fits every example on its own and prints the mean and spread of those
exponents and R^2 values.

Read a trained model's fit against the toy one: softmax of Gaussian logits
(`--scale` is their standard deviation) is already a smoothly falling curve
with a high R^2 over many ranks. What the training adds is in the
difference: a steeper or shallower exponent, a straighter line, or a line
over more of the ranks. `--ranks=first,last` restricts the fit to a range
of ranks (e.g. `2,100` leaves out the top prediction).

The workdir mode builds the model, state and evaluation exactly as the
training loop does (`zipfls_jax.training.loop`), restores the latest
checkpoint and evaluates the whole evaluation split once. The dataset must
be prepared as for training (`--data_dir` overrides the run's).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import sys  # noqa: E402

CURVES = (("all", False), ("correct", False), ("incorrect", False),
          ("all", True), ("correct", True), ("incorrect", True))


def toy_logits(kind: str, n: int, c: int, *, scale: float = 1.0, seed: int = 0):
  """Random (n, c) float32 logits and uniformly random labels: chance alone."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if n < 1 or c < 2:
    raise ValueError(f"--n must be >= 1 and --c >= 2, got n={n}, c={c}.")
  rng = np.random.default_rng(seed)
  if kind == "gaussian":
    logits = scale * rng.standard_normal((n, c))
  elif kind == "uniform":
    logits = scale * rng.random((n, c))
  else:
    raise ValueError(f"toy must be 'gaussian' or 'uniform', got {kind!r}.")
  return logits.astype(np.float32), rng.integers(0, c, size=n).astype(np.int32)


def toy(kind: str, n: int, c: int, *, scale: float = 1.0, seed: int = 0,
        ranks: Optional[Tuple[int, int]] = None):
  """Ranked sums and per-example score summaries of random logits."""
  import jax  # pylint: disable=g-import-not-at-top
  import zipfls_jax  # pylint: disable=g-import-not-at-top
  logits, labels = toy_logits(kind, n, c, scale=scale, seed=seed)
  ranked = jax.device_get(jax.jit(zipfls_jax.ranked_probability_sums)(logits, labels))
  summaries = {}
  for nontarget in (False, True):
    curve_ranks = _clip_ranks(ranks, c - 1 if nontarget else c)
    scores = jax.jit(zipfls_jax.zipf_scores, static_argnames="ranks")(
        logits, labels=labels if nontarget else None, ranks=curve_ranks)
    summaries[nontarget] = jax.device_get(zipfls_jax.zipf_score_summary(scores))
  return ranked, summaries


def evaluate_checkpoint(workdir: str, *, data_dir: Optional[str] = None):
  """(step, totals of `training.loop.evaluate`) for a workdir's latest checkpoint."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from zipfls_jax.training import loop, parallel  # pylint: disable=g-import-not-at-top

  config_path = epath.Path(workdir) / checkpoint_lib.CONFIG_FILE
  if not config_path.exists():
    raise FileNotFoundError(f"{workdir} is not a run's workdir: it has no "
                            f"{checkpoint_lib.CONFIG_FILE}.")
  config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  if data_dir is not None:
    config.data_dir = data_dir
  data_dir = config.data_dir or None
  if not (epath.Path(workdir) / "checkpoints").exists():
    raise FileNotFoundError(f"{workdir} has no checkpoints/ to evaluate.")

  setup = loop.build_setup(
      config, num_train_examples=data.num_examples(config.dataset, "train", data_dir=data_dir))
  mesh = parallel.make_data_mesh()
  abstract = checkpoint_lib.abstract_state(setup.init_state, jax.random.key(config.seed),
                                           parallel.replicated(mesh))
  checkpoints = checkpoint_lib.Checkpoints(
      os.path.join(workdir, checkpoint_lib.CHECKPOINTS_DIR),
      every_steps=config.checkpoint_every_steps, max_to_keep=config.max_checkpoints_to_keep)
  try:
    restored = checkpoints.restore(abstract)
  finally:
    checkpoints.close()
  if restored is None:
    raise FileNotFoundError(f"{workdir} has no checkpoint to evaluate.")
  step, state, _ = restored
  eval_step = parallel.compile_eval_step(setup.eval_model, mesh)
  batches = data.create_eval_iterator(config.dataset, global_batch_size=config.eval_batch_size,
                                      data_dir=data_dir, image_size=setup.image_shape[0])
  return step, loop.evaluate(eval_step, state, batches, mesh)


def _clip_ranks(ranks, length):
  """`ranks` for a curve of `length` ranks; last = C becomes C - 1 on non-target curves."""
  if ranks is None or ranks[1] != length + 1:
    return ranks
  return ranks[0], length


def fit_table(ranked, ranks: Optional[Tuple[int, int]] = None) -> Dict[Tuple[str, bool], Dict]:
  """The fit of every mean curve: {(subset, nontarget): exponent, intercept, r2, count}."""
  import zipfls_jax  # pylint: disable=g-import-not-at-top
  table = {}
  for subset, nontarget in CURVES:
    curve = ranked.mean(subset, nontarget=nontarget)
    fit = zipfls_jax.fit_power_law(curve, ranks=_clip_ranks(ranks, curve.shape[-1]))
    table[(subset, nontarget)] = {"exponent": float(fit.exponent),
                                  "intercept": float(fit.intercept),
                                  "r2": float(fit.r_squared),
                                  "count": float(ranked.total(subset))}
  return table


def format_table(table) -> str:
  lines = ["| classes | examples | count | exponent s | intercept a | R² |",
           "|---|---|---|---|---|---|"]
  for (subset, nontarget), fit in table.items():
    if fit["count"] == 0:
      continue  # e.g. no correct example: no curve to fit
    lines.append(f"| {'non-target' if nontarget else 'all'} | {subset} | {fit['count']:.0f} | "
                 f"{fit['exponent']:.4f} | {fit['intercept']:.4f} | {fit['r2']:.4f} |")
  return "\n".join(lines)


def plot(ranked, table, path: str, title: str,
         ranks: Optional[Tuple[int, int]] = None) -> None:
  """Mean ranked curves (all classes left, non-target right) with their fitted lines."""
  import io  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  for ax, nontarget in zip(axes, (False, True)):
    for colour, subset, width in (("C0", "all", 3.0), ("C2", "correct", 1.2),
                                  ("C3", "incorrect", 1.2)):
      fit = table[(subset, nontarget)]
      if fit["count"] == 0:
        continue
      curve = np.asarray(ranked.mean(subset, nontarget=nontarget))
      rank = np.arange(1, curve.size + 1)
      ax.loglog(rank, curve, color=colour, linewidth=width, alpha=0.8,
                label=f"{subset} ({fit['count']:.0f}): s={fit['exponent']:.3f}, "
                      f"R²={fit['r2']:.3f}")
      first, last = _clip_ranks(ranks, curve.size) or (1, curve.size)
      fitted = np.arange(first, last + 1)
      ax.loglog(fitted, np.exp(fit["intercept"]) * fitted ** -fit["exponent"], color=colour,
                linestyle=":", linewidth=1)
    ax.set_title(f"{title}: {'non-target classes' if nontarget else 'all classes'}")
    ax.set_xlabel("rank")
    ax.set_ylabel("mean probability")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title="examples (dotted: fitted line)", title_fontsize=8)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=120)
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())  # also a gs:// path


def _parse_ranks(text: Optional[str]) -> Optional[Tuple[int, int]]:
  if not text:
    return None
  try:
    first, last = (int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"must be 'first,last', e.g. 2,100; got {text!r}") from None
  return first, last


def parse_args(argv=None) -> argparse.Namespace:
  # argparse, not absl flags: the names (workdir, plot, seed) would clash
  # with the other entry points' absl flags when imported together.
  parser = argparse.ArgumentParser(
      prog="python -m experiments.zipf_law", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--workdir", help="A run's workdir (config.json + checkpoints).")
  source.add_argument("--toy", choices=("gaussian", "uniform"),
                      help="Random logits instead of a model: N(0, scale^2) or U(0, scale).")
  parser.add_argument("--data_dir", default=None, help="tfds data dir (default: the run's).")
  parser.add_argument("--n", type=int, default=1000, help="Toy: number of examples.")
  parser.add_argument("--c", type=int, default=1000, help="Toy: number of classes.")
  parser.add_argument("--scale", type=float, default=1.0,
                      help="Toy: std (gaussian) or width (uniform) of the logits.")
  parser.add_argument("--seed", type=int, default=0, help="Toy: random seed.")
  parser.add_argument("--ranks", type=_parse_ranks, default=None,
                      help="Fit ranks 'first,last' (1-based, inclusive); default every rank. "
                           "A last rank of C means C - 1 on the non-target curves.")
  parser.add_argument("--plot", default="zipf_law.png",
                      help="Where to write the log-log plot ('' = none; gs:// works).")
  args = parser.parse_args(argv)
  if args.toy and (args.n < 1 or args.c < 2):
    parser.error(f"--n must be >= 1 and --c >= 2, got n={args.n}, c={args.c}")
  return args


def main(argv=None) -> None:
  args = parse_args(argv)
  ranks = args.ranks
  if args.toy is not None:
    try:
      ranked, summaries = toy(args.toy, args.n, args.c, scale=args.scale, seed=args.seed,
                              ranks=ranks)
    except ValueError as error:  # a --ranks outside the curve
      sys.exit(f"error: --ranks: {error}")
    title = f"{args.toy} logits (scale {args.scale:g}), N={args.n}, C={args.c}"
  else:
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # our lines only, not the libraries' INFO
    step, result = evaluate_checkpoint(args.workdir, data_dir=args.data_dir)
    ranked, summaries = result["ranked"], None
    title = f"{os.path.basename(os.path.normpath(args.workdir))}, step {step}"
    print(f"Checkpoint at step {step}: top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}% "
          f"on {result['count']:.0f} examples.")
  try:
    table = fit_table(ranked, ranks)
  except ValueError as error:  # a --ranks outside the curve
    sys.exit(f"error: --ranks: {error}")
  span = "every rank" if ranks is None else f"ranks {ranks[0]}..{ranks[1]}"
  print(f"\nRanked predictions of {title}.\nLeast-squares fit of log p(r) = a - s log r over "
        f"{span} of each mean curve:\n")
  print(format_table(table))
  if summaries is not None:
    print("\nEach example fitted on its own (mean ± std over examples):\n")
    for nontarget, summary in summaries.items():
      print(f"  {'non-target' if nontarget else 'all classes'}: exponent "
            f"{summary['exponent_mean']:.4f} ± {summary['exponent_std']:.4f}, R² "
            f"{summary['r_squared_mean']:.4f} ± {summary['r_squared_std']:.4f}")
  if args.plot:
    plot(ranked, table, args.plot, title, ranks)
    print(f"\nPlot: {args.plot}")


if __name__ == "__main__":
  main()
