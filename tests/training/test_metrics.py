"""Metric files (JSON lines, TensorBoard), the NaN stop, and the results sheet."""
import json
import math
import os

import jax.numpy as jnp
import pytest

from experiments import results_sheet
from zipfls_jax.training import metrics


def test_writer_writes_json_lines_and_tensorboard_scalars(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path), tensorboard=True)
  writer.write(3, {"train_loss": 1.5, "train_zipf": 0.25})
  writer.write(6, {"eval_top1": 42.0})
  writer.close()
  assert metrics.read_metrics(str(tmp_path)) == [
      {"step": 3, "train_loss": 1.5, "train_zipf": 0.25}, {"step": 6, "eval_top1": 42.0}]

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = tf.io.gfile.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
  assert len(files) == 1
  seen = {}
  for event in tf.compat.v1.train.summary_iterator(files[0]):
    for value in event.summary.value:
      assert value.metadata.plugin_data.plugin_name == "scalars"
      seen[(event.step, value.tag)] = float(tf.make_ndarray(value.tensor))
  assert seen == {(3, "train_loss"): 1.5, (3, "train_zipf"): 0.25, (6, "eval_top1"): 42.0}


def test_check_finite_names_the_metric_and_step():
  metrics.check_finite({"loss": 1.0, "top1": 0.5}, step=7)
  with pytest.raises(FloatingPointError, match="zipf became nan at step 12"):
    metrics.check_finite({"loss": 1.0, "zipf": math.nan}, step=12)
  with pytest.raises(FloatingPointError, match="loss became inf"):
    metrics.check_finite({"loss": math.inf}, step=1)


def test_progress_line_has_eta():
  progress = metrics.Progress(total_steps=100, start_step=0, batch_size=8)
  line = progress.line(10, 0.5, {"loss": 2.0, "top1": 0.25}, eta_sec=3725)
  assert line == "step 10/100 | epoch 0.50 | loss 2 | top1 0.25 | ETA 1:02:05"


def write_run(root, name, *, dataset, model, method, seed, top1s, distribution="zipf"):
  workdir = root / name
  workdir.mkdir()
  config = {"dataset": dataset, "model": model, "seed": seed, "exits": False,
            "loss": {"method": method, "distribution": distribution, "rank_by": "votes",
                     "correct_only": False}}
  (workdir / "config.json").write_text(json.dumps(config))
  with open(workdir / "metrics.jsonl", "w") as f:
    for epoch, top1 in enumerate(top1s, start=1):
      f.write(json.dumps({"step": 10 * epoch, "train_loss": 1.0}) + "\n")
      f.write(json.dumps({"step": 10 * epoch, "eval_top1": top1, "epoch": epoch}) + "\n")


def test_results_sheet_gives_runs_of_other_settings_their_own_row(tmp_path):
  common = dict(dataset="cifar100", model="cifar_resnet18", method="zipf")
  write_run(tmp_path, "a", seed=0, top1s=[70.0], **common)
  write_run(tmp_path, "b", seed=1, top1s=[72.0], **common)
  write_run(tmp_path, "c", seed=0, top1s=[60.0], **common)
  config = json.loads((tmp_path / "c" / "config.json").read_text())
  config["loss"]["lam"] = 1.0
  config["log_every_steps"] = 5  # does not change what is computed
  (tmp_path / "c" / "config.json").write_text(json.dumps(config))
  table = results_sheet.markdown_table(results_sheet.find_runs([str(tmp_path)])).splitlines()
  assert table[2:] == [
      "| CIFAR-100 | cifar_resnet18 | Zipf's LS {loss.lam=1.0} | 1 | 60.00 | - | - |",
      "| CIFAR-100 | cifar_resnet18 | Zipf's LS {loss.lam=None} | 2 | 71.00 ± 1.41 | - | - |",
  ]


def test_results_sheet_table_and_plot(tmp_path):
  common = dict(dataset="cifar100", model="cifar_resnet18")
  write_run(tmp_path, "zipf0", method="zipf", seed=0, top1s=[50.0, 76.0, 75.0], **common)
  write_run(tmp_path, "zipf1", method="zipf", seed=1, top1s=[60.0, 70.0, 78.0], **common)
  write_run(tmp_path, "ce0", method="ce", seed=0, top1s=[70.0, 74.5], **common)
  write_run(tmp_path, "pareto0", method="zipf", seed=0, top1s=[71.0],
            distribution="random_pareto", **common)
  (tmp_path / "unfinished").mkdir()
  runs = results_sheet.find_runs([str(tmp_path)])
  assert len(runs) == 4
  table = results_sheet.markdown_table(runs).splitlines()
  # Best top-1 per run: 76 and 78 -> mean 77, sample std sqrt(2).
  assert table[2:] == [
      "| CIFAR-100 | cifar_resnet18 | CE | 1 | 74.50 | 75.51 ± 0.28 | 75.29 ± 0.29 |",
      "| CIFAR-100 | cifar_resnet18 | Zipf's LS | 2 | 77.00 ± 1.41 | 77.38 ± 0.32 | 77.08 ± 0.28 |",
      "| CIFAR-100 | cifar_resnet18 | Zipf's LS[random_pareto] | 1 | 71.00 | - | - |",
  ]
  plot = tmp_path / "curves.png"
  results_sheet.plot_curves(runs, str(plot))
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_finite_state_refuses_a_nan_parameter():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
  metrics.check_finite_state(params, step=4)
  params["dense"]["bias"] = jnp.array([0.0, jnp.nan, 0.0])
  with pytest.raises(FloatingPointError, match="no longer finite at step 9; not saving"):
    metrics.check_finite_state(params, step=9)
