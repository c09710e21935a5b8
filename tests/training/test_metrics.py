"""Metric files (JSON lines, TensorBoard), the NaN stop, and the results sheet."""
import json
import math
import os

import jax.numpy as jnp
import pytest

from experiments import results_sheet
from zipfls_jax.training import metrics


def test_writer_writes_json_lines_and_tensorboard_scalars(tmp_path):
  workdir = tmp_path / "zipf"
  writer = metrics.MetricWriter(str(workdir), tensorboard=True)
  writer.write(3, {"train_loss": 1.5, "train_zipf": 0.25, "epoch": 0.5})
  writer.write(3, {"eval_top1": 42.0, "epoch": 0.5})  # as the loop writes an eval step
  writer.write(6, {"eval_top1": 43.0, "epoch": 1.0})
  writer.close()
  assert metrics.read_metrics(str(workdir)) == [
      {"step": 3, "train_loss": 1.5, "train_zipf": 0.25, "epoch": 0.5},
      {"step": 3, "eval_top1": 42.0, "epoch": 0.5}, {"step": 6, "eval_top1": 43.0, "epoch": 1.0}]

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # In the workdir itself: `tensorboard --logdir <parent>` shows the run as "zipf".
  files = tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert len(files) == 1
  seen = []
  for event in tf.compat.v1.train.summary_iterator(files[0]):
    for value in event.summary.value:
      assert value.metadata.plugin_data.plugin_name == "scalars"
      seen.append((event.step, value.tag, float(tf.make_ndarray(value.tensor))))
  assert sorted(seen) == [(3, "epoch", 0.5), (3, "eval_top1", 42.0), (3, "train_loss", 1.5),
                          (3, "train_zipf", 0.25), (6, "epoch", 1.0), (6, "eval_top1", 43.0)]


def test_tensorboard_names_runs_after_their_workdirs(tmp_path):
  # TensorBoard itself (the `experiments` extra installs it) reading two runs.
  from tensorboard.backend.event_processing import event_multiplexer  # pylint: disable=g-import-not-at-top
  for method, loss in (("ce", 2.0), ("zipf", 1.0)):
    writer = metrics.MetricWriter(str(tmp_path / method), tensorboard=True)
    writer.write(5, {"train_loss": loss, "epoch": 0.25})
    writer.write(5, {"eval_top1": 50.0, "epoch": 0.25})
    writer.close()
  board = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
  board.Reload()
  assert set(board.Runs()) == {"ce", "zipf"}
  assert [(e.step, float(tf_value(e))) for e in board.Tensors("zipf", "train_loss")] == [(5, 1.0)]
  assert len(board.Tensors("zipf", "epoch")) == 1


def tf_value(event):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.make_ndarray(event.tensor_proto)


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


def test_progress_line_gives_the_eta_of_later_runs_too(monkeypatch):
  now = [1000.0]
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
  progress = metrics.Progress(total_steps=100, start_step=0, batch_size=8, runs_after=2)
  now[0] += 30.0  # 25 steps in 30 s: 120 s a run, 90 s left of this one
  line = progress.line(25, 0.5, {}, eta_sec=90)
  assert line == "step 25/100 | epoch 0.50 | ETA 1:30 | ETA with 2 later runs 5:30"
  single = metrics.Progress(total_steps=100, start_step=0, batch_size=8, runs_after=1)
  now[0] += 30.0
  assert single.line(25, 0.5, {}, eta_sec=90).endswith("| ETA with 1 later run 3:30")


def test_images_per_sec_leaves_out_an_evaluation_between_two_logs(monkeypatch):
  # `make demo` once logged 5,544 images/s (3x the real rate) for the 100
  # steps around an evaluation: the steps before it were divided by the
  # time after it only.
  now = [0.0]
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
  progress = metrics.Progress(total_steps=1000, start_step=0, batch_size=8)
  now[0] += 10.0   # steps 1-100: 10 s
  assert progress.rates(100)["images_per_sec"] == pytest.approx(80.0)
  now[0] += 6.8    # steps 101-168: 6.8 s
  now[0] += 50.0   # an evaluation: 50 s
  progress.exclude(50.0)
  now[0] += 3.2    # steps 169-200: 3.2 s
  assert progress.rates(200)["images_per_sec"] == pytest.approx(80.0)


def test_phase_times_count_nested_phases_once(monkeypatch):
  now = [0.0]
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
  times = metrics.PhaseTimes()
  with times.measure("eval"):
    now[0] += 1.0
    with times.measure("compile"):
      now[0] += 5.0
    now[0] += 2.0
  with times.measure("eval"):
    now[0] += 3.0
  assert dict(times.seconds) == {"eval": 6.0, "compile": 5.0}


def test_announce_compile_prints_around_the_first_call_only(capsys):
  times = metrics.PhaseTimes()
  calls = []
  step = metrics.announce_compile(lambda x: calls.append(x) or 2 * x, "train step", times)
  assert step(1) == 2 and step(2) == 4 and calls == [1, 2]
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "Compiling the train step with XLA (once per run)..."
  assert lines[1].startswith("Compiled the train step in ") and len(lines) == 2
  assert set(times.seconds) == {"compile"}
  quiet = metrics.announce_compile(lambda x: x, "eval step", times, enabled=False)
  quiet(1)
  assert capsys.readouterr().out == ""


def test_console_prints_on_process_zero_only(monkeypatch, capsys):
  metrics.console("from process 0")
  monkeypatch.setattr(metrics.jax, "process_index", lambda: 1)
  metrics.console("from process 1")
  assert capsys.readouterr().out == "from process 0\n"


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


def test_comparison_sheet_puts_our_gains_beside_the_papers_and_plots_them(tmp_path):
  cell = dict(dataset="tiny_imagenet", model="cifar_resnet18")
  write_run(tmp_path, "ce0", method="ce", seed=0, top1s=[55.0, 56.0], **cell)
  write_run(tmp_path, "ce1", method="ce", seed=1, top1s=[57.0], **cell)
  write_run(tmp_path, "cs0", method="cs_kd", seed=0, top1s=[58.5], **cell)
  write_run(tmp_path, "cs1", method="cs_kd", seed=1, top1s=[59.5], **cell)
  # Another cell: not part of the comparison.
  write_run(tmp_path, "other", method="cs_kd", seed=0, top1s=[90.0], dataset="cifar100",
            model="cifar_resnet18")
  runs = results_sheet.find_runs([str(tmp_path)])
  rows = {line.split(" | ")[0][2:]: line.split(" | ")
          for line in results_sheet.comparison_table(runs).splitlines()[2:]}
  # CE: 56 and 57 -> 56.5; CS-KD: 58.5 and 59.5 -> 59.0, a gain of +2.50.
  assert rows["CE"][1:6] == ["0 (56.4)", "1x, 1x", "2", "56.50 ± 0.71", "-"]
  assert rows["CS-KD"][1:6] == ["+2.0", "2x, 1x", "2", "59.00 ± 0.71", "+2.50"]
  assert rows["Zipf's LS"][1:5] == ["+2.8", "1x, 1x", "0", "-"]
  assert set(rows) >= {"TF-KD", "LS", "BYOT", "PS-KD", "DDGSD", "BAN", "BAKE", "OLS"}
  # The cost columns: flops, memory and step time relative to CE, as
  # benchmarks/RESULTS.md records them (DDGSD's two views: 2x the flops).
  assert rows["CE"][6:9] == ["1.00x", "1.00x", "1.00x |"]
  assert rows["DDGSD"][6:8] == ["2.00x", "1.87x"]
  plot = tmp_path / "comparison.png"
  results_sheet.plot_comparison(runs, str(plot))
  assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_finite_state_refuses_a_nan_parameter():
  params = {"dense": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)}}
  metrics.check_finite_state(params, step=4)
  params["dense"]["bias"] = jnp.array([0.0, jnp.nan, 0.0])
  with pytest.raises(FloatingPointError, match="no longer finite at step 9; not saving"):
    metrics.check_finite_state(params, step=9)


def test_training_prints_only_through_console():
  # Every progress line of a run goes through `console` (process 0 only).
  import pathlib  # pylint: disable=g-import-not-at-top
  package = pathlib.Path(metrics.__file__).parent
  for path in package.glob("*.py"):
    text = path.read_text()
    allowed = 1 if path.name == "metrics.py" else 0  # console's own print
    assert text.count("print(") == allowed, path
