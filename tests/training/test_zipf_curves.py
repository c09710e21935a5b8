"""The Zipf's-law curves a run saves, the results sheet's view of them, and the toy mode.

The workdir mode of `experiments.zipf_law` is tested on a real tiny run in
`test_loop.py` (it must reproduce the curve the loop saved).
"""
import json

import numpy as np
import pytest

import zipfls_jax
from experiments import results_sheet
from experiments import zipf_law as zipf_law_cli
from zipfls_jax.training import zipf_curves


def ranked(seed, num_classes=6):
  rng = np.random.default_rng(seed)
  probs = np.sort(rng.random((2, num_classes)), axis=1)[:, ::-1].astype(np.float32)
  return zipfls_jax.RankedProbabilitySums(
      probs=probs.copy(), nontarget=probs[:, 1:].copy(),
      count=np.array([2.0, 1.0], np.float32))


def test_curves_round_trip_one_file_per_evaluation(tmp_path):
  zipf_curves.save_curve(str(tmp_path), 200, ranked(0))
  zipf_curves.save_curve(str(tmp_path), 400, ranked(1))
  zipf_curves.save_curve(str(tmp_path), 200, ranked(2))  # a resumed run evaluates again
  assert sorted(p.name for p in (tmp_path / "zipf_law").iterdir()) == [
      "step_000000200.npz", "step_000000400.npz"]  # nothing partial left behind
  curves = zipf_curves.read_curves(str(tmp_path))
  assert list(curves) == [200, 400]
  np.testing.assert_array_equal(curves[200].probs, ranked(2).probs)
  with np.load(tmp_path / "zipf_law" / "step_000000400.npz") as f:
    want = ranked(1)
    np.testing.assert_allclose(f["mean"], want.probs.sum(0) / 3.0, rtol=1e-6)
    np.testing.assert_allclose(f["nontarget_mean"], want.nontarget.sum(0) / 3.0, rtol=1e-6)
  scalars = zipf_curves.fit_scalars(curves[400])
  fit = zipfls_jax.fit_power_law(np.asarray(want.nontarget.sum(0) / 3.0))
  assert scalars["eval_zipf_nontarget_exponent"] == pytest.approx(float(fit.exponent), rel=1e-6)
  assert set(scalars) == {"eval_zipf_exponent", "eval_zipf_r2", "eval_zipf_nontarget_exponent",
                          "eval_zipf_nontarget_r2"}
  assert zipf_curves.read_curves(str(tmp_path / "none")) == {}


def write_run(root, name, method, exponents):
  workdir = root / name
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(
      {"dataset": "fashion_mnist", "model": "cifar_resnet_tiny", "seed": 0, "exits": False,
       "loss": {"method": method}}))
  with open(workdir / "metrics.jsonl", "w") as f:
    for epoch, s in enumerate(exponents, start=1):
      f.write(json.dumps({"step": 10 * epoch, "epoch": epoch, "eval_top1": 80.0 + epoch,
                          "eval_zipf_exponent": s, "eval_zipf_r2": 0.9,
                          "eval_zipf_nontarget_exponent": s + 1,
                          "eval_zipf_nontarget_r2": 0.95}) + "\n")
      zipf_curves.save_curve(str(workdir), 10 * epoch, ranked(epoch))
  return workdir


def test_results_sheet_prints_the_last_fit_beside_top1_and_plots(tmp_path):
  write_run(tmp_path, "ce", "ce", [1.0, 1.5])
  write_run(tmp_path, "zipf", "zipf", [2.0, 2.25])
  old = tmp_path / "old"
  old.mkdir()
  (old / "config.json").write_text((tmp_path / "ce" / "config.json").read_text().replace(
      '"seed": 0', '"seed": 1'))
  (old / "metrics.jsonl").write_text(json.dumps({"step": 5, "epoch": 1, "eval_top1": 50.0}))
  runs = results_sheet.find_runs([str(tmp_path)])
  table = results_sheet.zipf_table(runs).splitlines()
  assert table[2] == ("| Fashion-MNIST | cifar_resnet_tiny | CE | 0 | 82.00 | 82.00 | 1.500 | "
                      "0.900 | 2.500 | 0.950 |")
  assert table[3] == ("| Fashion-MNIST | cifar_resnet_tiny | CE | 1 | 50.00 | 50.00 | - | - | "
                      "- | - |")  # logged before the fits existed
  assert table[4].startswith("| Fashion-MNIST | cifar_resnet_tiny | Zipf's LS | 0 | 82.00 |")
  path = tmp_path / "zipf.png"
  results_sheet.plot_zipf_law(runs, str(path))
  assert path.stat().st_size > 10_000


def test_toy_mode_shows_chance_and_plots(tmp_path, capsys):
  # The shapes of the command below, whose compiled functions are then reused.
  ranked_sums, summaries = zipf_law_cli.toy("uniform", 50, 30, seed=1, ranks=(2, 30))
  assert float(np.sum(ranked_sums.count)) == 50
  logits, _ = zipf_law_cli.toy_logits("uniform", 50, 30, seed=1)
  assert 0.0 <= logits.min() and logits.max() < 1.0
  p = np.exp(logits - logits.max(1, keepdims=True))
  p = np.sort(p / p.sum(1, keepdims=True), axis=1)[:, ::-1]
  np.testing.assert_allclose(ranked_sums.mean(), p.mean(0), rtol=1e-5)
  assert summaries[True]["count"] == 50 and summaries[False]["exponent_std"] > 0
  with pytest.raises(ValueError, match="--n must be >= 1 and --c >= 2"):
    zipf_law_cli.toy_logits("gaussian", 10, 1)
  plot = tmp_path / "toy.png"
  zipf_law_cli.main(["--toy", "gaussian", "--n", "50", "--c", "30", "--ranks", "2,30",
                     "--plot", str(plot)])
  out = capsys.readouterr().out
  assert "over ranks 2..30 of each mean curve" in out
  assert "| all | all | 50 |" in out and "| non-target | all | 50 |" in out
  assert "Each example fitted on its own" in out
  assert plot.stat().st_size > 10_000
  with pytest.raises(SystemExit):
    zipf_law_cli.main(["--toy", "gaussian", "--workdir", "w"])  # one source, not both
  with pytest.raises(SystemExit, match="--ranks: `ranks` must satisfy"):
    zipf_law_cli.main(["--toy", "uniform", "--n", "50", "--c", "30", "--ranks", "2,31",
                       "--plot", ""])
