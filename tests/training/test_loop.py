"""The experiment loop end to end under tfds mock data on 8 fake CPU devices.

Real train steps of tiny models for CIFAR-100-, ImageNet- and iNat-shaped
data; an interrupted (SIGTERM) and resumed run ends with the parameters of
an uninterrupted one; a workdir of another config, bad config keys and
missing data are refused with messages that say what is wrong.
"""
import json
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

import zipfls_jax.data as data
from experiments.configs import paper
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import loop


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
def test_real_train_steps_under_mock_data(tmp_path, dataset, model):
  config = tiny_config(dataset, model)
  with mock():
    summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 3 and not summary["preempted"]
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
  assert summary["best_top1"] == max(r["eval_top1"] for r in evals)
  assert evals[-1]["best_top1"] == summary["best_top1"]
  assert os.path.isdir(tmp_path / "checkpoints" / "3")


def _final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(step), "state"))
  return restored["params"]


def test_sigterm_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
  config = tiny_config("cifar100", "cifar_resnet_tiny", method="zipf", steps=4)
  config.loss.distribution = "random_pareto"  # the per-step key must resume too
  # Logging also happens at every save, so no state is saved unchecked for NaN.
  config.log_every_steps = 3
  with mock():
    straight = loop.train_and_evaluate(config, str(tmp_path / "straight"))

    # Preempt the second run while it reads its 3rd batch, that is as it
    # starts step 2 (batches are placed on the devices one step ahead): it
    # must finish that step, save and stop.
    create = data.create_train_iterator

    def preempted_iterator(*args, **kwargs):
      for count, batch in enumerate(create(*args, **kwargs), start=1):
        if count == 3:
          os.kill(os.getpid(), signal.SIGTERM)
        yield batch

    monkeypatch.setattr(data, "create_train_iterator", preempted_iterator)
    first = loop.train_and_evaluate(config, str(tmp_path / "resumed"))
    monkeypatch.setattr(data, "create_train_iterator", create)
    second = loop.train_and_evaluate(config, str(tmp_path / "resumed"))

  assert first["preempted"] and first["step"] == 2
  assert os.path.isdir(tmp_path / "resumed" / "checkpoints" / "2")
  assert not second["preempted"] and second["step"] == 4
  straight_params = _final_params(tmp_path / "straight", 4)
  resumed_params = _final_params(tmp_path / "resumed", 4)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), straight_params,
               resumed_params)
  assert second["best_top1"] == straight["best_top1"]
  # Logged at the checkpoint (2), logging (3) and last (4) steps; the resumed
  # run logged steps 3 and 4 only once.
  for run in ("straight", "resumed"):
    steps = [r["step"] for r in read_jsonl(tmp_path / run) if "train_loss" in r]
    assert steps == [2, 3, 4], run


def test_sigterm_sets_the_flag_with_one_process_and_the_handler_is_restored():
  before = signal.getsignal(signal.SIGTERM)
  with loop._PreemptionFlag() as flag:
    assert not flag.should_stop(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert flag.should_stop(2)
  assert signal.getsignal(signal.SIGTERM) is before


def test_several_processes_leave_sigterm_to_the_preemption_service(monkeypatch):
  # A Python handler would replace JAX's preemption notifier: each host
  # would then stop at its own step and the collective save would hang.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", lambda step: step == 5)
  before = signal.getsignal(signal.SIGTERM)
  with loop._PreemptionFlag() as flag:
    assert signal.getsignal(signal.SIGTERM) is before
    assert [flag.should_stop(step) for step in (4, 5, 6)] == [False, True, False]


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
