r"""Trains one run of the paper from a config file.

    python -m experiments.train \
        --config=experiments/configs/paper.py:cifar100,cifar_resnet18,zipf \
        --workdir=workdirs/cifar100_resnet18_zipf_seed0 --config.seed=0

Any config key can be overridden with `--config.KEY=VALUE` (e.g.
`--config.loss.lam=0.5`). Rerunning the same command resumes from the
workdir's latest checkpoint. On a multi-host TPU VM, run the same command on
every host with `--config.distributed=True`. The logic lives in
`zipfls_jax.training.loop`; this file only parses flags.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "An ml_collections config file, with its argument after ':' "
    "(experiments/configs/paper.py:DATASET,MODEL,METHOD[,ABLATION]).",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from zipfls_jax.training import loop  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    # Progress goes to stdout; keep the libraries' INFO logs (one screen per
    # checkpoint) for --verbosity=0.
    logging.set_verbosity(logging.WARNING)
  try:
    summary = loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (FileNotFoundError, FloatingPointError, ValueError) as error:
    # Missing data, a bad config value, a workdir of another config, NaN:
    # the message says what to do; the traceback is for --verbosity=1.
    if flags.FLAGS.verbosity >= 1:
      raise
    sys.exit(f"error: {error}\n(rerun with --verbosity=1 for the traceback)")
  print(f"Done: best top-1 {summary['best_top1']:.2f}% at step {summary['step']}"
        + (" (stopped by SIGTERM; rerun to resume)" if summary["preempted"] else ""))


if __name__ == "__main__":
  app.run(main)
