"""The experiment loop end to end under tfds mock data on 8 fake CPU devices.

Real train steps of tiny models for CIFAR-100-, ImageNet- and iNat-shaped
data; an interrupted (SIGTERM) and resumed run ends with the parameters of
an uninterrupted one; a workdir of another config, bad config keys and
missing data are refused with messages that say what is wrong.
"""
import json
import os
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

import zipfls_jax.data as data
from experiments import zipf_law as zipf_law_cli
from experiments.configs import paper
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import loop
from zipfls_jax.training import zipf_curves


def tiny_config(dataset, model, *, method="zipf", steps=3):
  config = paper.recipe("cifar100", model, method)
  config.dataset = dataset
  config.image_size = 16
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = steps
  config.steps_per_epoch = 2
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.tensorboard = False
  config.console = False
  config.vote_upsample = 0 if model == "resnet_tiny" else 2
  return config


def mock(num_examples=20):
  return tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE)


def read_jsonl(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("dataset, model", [
    ("cifar100", "cifar_resnet_tiny"),
    ("imagenet2012", "resnet_tiny"),
    ("i_naturalist2021", "resnet_tiny"),
])
def test_real_train_steps_under_mock_data(tmp_path, dataset, model, capsys):
  config = tiny_config(dataset, model)
  config.console = True
  with mock():
    summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 3 and not summary["preempted"]
  # The console says what XLA compiles, once each, and the summary splits
  # the wall time into phases that add up to at most the total.
  out = capsys.readouterr().out
  for what in ("initialisation", "train step", "eval step"):
    assert out.count(f"Compiling the {what} with XLA") == 1, out
  seconds = summary["seconds"]
  assert set(seconds) == {"setup", "compile", "eval", "total"}
  assert min(seconds.values()) > 0
  assert sum(seconds.values()) - seconds["total"] <= seconds["total"] + 1e-6
  records = read_jsonl(tmp_path)
  train = [r for r in records if "train_loss" in r]
  evals = [r for r in records if "eval_top1" in r]
  assert [r["step"] for r in train] == [1, 2, 3]
  for r in train:
    assert np.isfinite(r["train_loss"]) and r["train_zipf"] > 0
    assert r["train_loss"] == pytest.approx(r["train_ce"] + 0.1 * r["train_zipf"], rel=1e-5)
  # Evaluated after each "epoch" of 2 steps and at the end.
  assert [r["step"] for r in evals] == [2, 3]
  for r in evals:
    assert 0.0 <= r["eval_top1"] <= r["eval_top5"] <= 100.0
  # Every evaluation saved its ranked curve and logged its fits.
  curves = zipf_curves.read_curves(str(tmp_path))
  assert list(curves) == [2, 3]
  for r in evals:
    ranked = curves[r["step"]]
    assert float(np.sum(ranked.count)) == 20  # the mock eval split, padding excluded
    np.testing.assert_allclose(np.sum(ranked.mean()), 1.0, rtol=1e-5)
    assert np.isfinite(r["eval_zipf_exponent"]) and np.isfinite(r["eval_zipf_nontarget_r2"])
    assert r == r | zipf_curves.fit_scalars(ranked)
  if dataset == "cifar100":
    # `python -m experiments.zipf_law --workdir` on the last checkpoint
    # reproduces the curve the loop saved at that step.
    with mock():
      step, result = zipf_law_cli.evaluate_checkpoint(str(tmp_path))
    assert step == 3 and result["top1"] == evals[-1]["eval_top1"]
    for got, want in zip(jax.tree.leaves(result["ranked"]), jax.tree.leaves(curves[3])):
      np.testing.assert_allclose(got, want, rtol=1e-6)
  assert summary["best_top1"] == max(r["eval_top1"] for r in evals)
  assert evals[-1]["best_top1"] == summary["best_top1"]
  assert os.path.isdir(tmp_path / "checkpoints" / "3")


def _final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))
  return restored["params"]


def _train_records(workdir):
  # Everything but the throughput, which depends on the machine's load.
  return [{k: v for k, v in r.items() if k != "train_images_per_sec"}
          for r in read_jsonl(workdir) if "train_loss" in r]


def resume_config():
  config = tiny_config("cifar100", "cifar_resnet_tiny", method="zipf", steps=5)
  config.loss.distribution = "random_pareto"  # the per-step key must resume too
  # Saves at 2, 4, 5; logs at 2, 4 (also saves) and 5; evaluates at 2, 4, 5.
  config.log_every_steps = 4
  config.max_checkpoints_to_keep = 3
  return config


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """One uninterrupted run of `resume_config`, shared by the resume tests."""
  workdir = tmp_path_factory.mktemp("straight")
  with mock():
    summary = loop.train_and_evaluate(resume_config(), str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "5"]
  assert [r["step"] for r in read_jsonl(workdir) if "train_loss" in r] == [2, 4, 5]
  return workdir, summary


def _assert_same_run(workdir, straight_run):
  straight, summary = straight_run
  jax.tree.map(np.testing.assert_array_equal, _final_params(straight, 5),
               _final_params(workdir, 5))
  assert _train_records(workdir) == _train_records(straight)
  evals = [r for r in read_jsonl(workdir) if "eval_top1" in r]
  assert evals == [r for r in read_jsonl(straight) if "eval_top1" in r]
  del summary


def test_sigterm_then_resume_equals_uninterrupted(tmp_path, monkeypatch, straight_run):
  config = resume_config()
  workdir = tmp_path / "resumed"
  # Preempt the run as it starts step 3, when the loop reads the 4th batch
  # (one batch is placed on the devices ahead of its step): it must finish
  # that step, save and stop, without logging that step on its own: its
  # metrics go into the checkpoint, and the resumed run's record of step 4
  # averages steps 3 and 4, as the uninterrupted run's does.
  create = data.create_train_iterator

  def preempted_iterator(*args, **kwargs):
    for count, batch in enumerate(create(*args, **kwargs), start=1):
      if count == 4:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  with mock():
    monkeypatch.setattr(data, "create_train_iterator", preempted_iterator)
    first = loop.train_and_evaluate(config, str(workdir))
    monkeypatch.setattr(data, "create_train_iterator", create)
    second = loop.train_and_evaluate(config, str(workdir))

  assert first["preempted"] and first["step"] == 3
  assert os.path.isdir(workdir / "checkpoints" / "3")
  assert not second["preempted"] and second["step"] == 5
  assert second["best_top1"] == straight_run[1]["best_top1"]
  _assert_same_run(workdir, straight_run)


def test_a_kill_after_the_last_checkpoint_leaves_no_duplicate_records(tmp_path, straight_run):
  # What a SIGKILL after step 4 was logged, but before it was saved, leaves:
  # records up to step 4 (the last one cut short) and checkpoints up to 2.
  workdir = tmp_path / "killed"
  shutil.copytree(straight_run[0], workdir)
  for step in ("4", "5"):
    shutil.rmtree(workdir / "checkpoints" / step)
  lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
  last_step4 = max(i for i, line in enumerate(lines) if json.loads(line)["step"] == 4)
  (workdir / "metrics.jsonl").write_text("".join(lines[:last_step4]) + lines[last_step4][:25])
  with mock():
    summary = loop.train_and_evaluate(resume_config(), str(workdir))
  assert summary["step"] == 5
  _assert_same_run(workdir, straight_run)


def test_a_flipped_bit_in_the_latest_checkpoint_resumes_from_the_previous(
    tmp_path, straight_run, caplog):
  workdir = tmp_path / "flipped"
  shutil.copytree(straight_run[0], workdir)
  files = [f for f in (workdir / "checkpoints" / "5" / "state").rglob("*") if f.is_file()]
  largest = max(files, key=lambda f: f.stat().st_size)
  raw = bytearray(largest.read_bytes())
  raw[len(raw) // 2] ^= 0x10
  largest.write_bytes(bytes(raw))
  with mock():
    summary = loop.train_and_evaluate(resume_config(), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any("step 5" in w and "cannot be restored" in w for w in warnings), warnings
  assert summary["step"] == 5
  assert os.path.isdir(workdir / "checkpoints" / "damaged-5")
  _assert_same_run(workdir, straight_run)


def test_sigterm_sets_the_flag_with_one_process_and_the_handler_is_restored(tmp_path):
  # Orbax's reached_preemption is False with one process and no distributed
  # runtime, even after SIGTERM: our own handler is what stops the run.
  checkpoints = loop.checkpoint_lib.Checkpoints(str(tmp_path), every_steps=2)
  before = signal.getsignal(signal.SIGTERM)
  with loop._SigtermFlag() as flag:
    assert not flag.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.requested
    assert not checkpoints.reached_preemption(2)
  assert signal.getsignal(signal.SIGTERM) is before
  checkpoints.close()


def test_several_processes_leave_sigterm_to_the_preemption_service(monkeypatch, tmp_path):
  # A Python handler would replace JAX's preemption notifier: each host
  # would then stop at its own step and the collective save would hang.
  # Orbax asks JAX's sync point, and saves there too.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  checkpoints = loop.checkpoint_lib.Checkpoints(str(tmp_path), every_steps=4)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", lambda step: step == 5)
  before = signal.getsignal(signal.SIGTERM)
  with loop._SigtermFlag():
    assert signal.getsignal(signal.SIGTERM) is before
  assert [checkpoints.reached_preemption(step) for step in (4, 5, 6)] == [False, True, False]
  assert [checkpoints.should_save(step) for step in (3, 4, 5, 6)] == [False, True, True, False]
  assert [checkpoints.on_interval(step) for step in (4, 5)] == [True, False]
  checkpoints.close()


def test_saves_on_the_interval_only(tmp_path):
  # No extra save after the first step (orbax's InitialSavePolicy, which
  # save_interval_steps would add).
  checkpoints = loop.checkpoint_lib.Checkpoints(str(tmp_path), every_steps=3)
  assert [s for s in range(1, 10) if checkpoints.should_save(s)] == [3, 6, 9]
  checkpoints.close()


def test_workdir_of_another_config_is_refused(tmp_path):
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  config_lib.validate_config(config)
  loop.checkpoint_lib.check_workdir_config(str(tmp_path), config.to_dict(),
                                           ignore=config_lib.RESUMABLE_KEYS)
  other = tiny_config("cifar100", "cifar_resnet_tiny")
  other.loss.lam = 0.5
  other.log_every_steps = 7  # allowed to change
  with mock(), pytest.raises(ValueError, match=r"loss\.lam: workdir has 0\.1, this run has 0\.5"):
    loop.train_and_evaluate(other, str(tmp_path))


def test_bad_config_keys_are_named():
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  with config.unlocked():
    config.loss.lamda = 0.5
    config.learning_rte = 0.1
  with pytest.raises(ValueError, match=r"unknown \['config.learning_rte', 'config.loss.lamda'\]"):
    config_lib.validate_config(config)
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  config.loss.method = "zipff"
  with pytest.raises(ValueError, match="loss.method must be one of"):
    loop.build_setup(config, num_train_examples=100)
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  config.batch_size = 12
  with pytest.raises(ValueError, match="batch_size=12 must divide by the 8 devices"):
    config_lib.validate_config(config)


def test_a_config_that_does_not_build_leaves_the_workdir_free(tmp_path):
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  config.loss.method = "zipff"
  with mock(), pytest.raises(ValueError, match="loss.method must be one of"):
    loop.train_and_evaluate(config, str(tmp_path))
  # Nothing written, so the corrected rerun is not refused as another config.
  assert not (tmp_path / "config.json").exists()


def test_missing_data_says_where_to_put_it(tmp_path):
  config = tiny_config("cifar100", "cifar_resnet_tiny")
  config.data_dir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="cifar100"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
