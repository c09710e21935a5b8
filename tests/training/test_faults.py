"""Bad configs, bad workdirs and bad files refused in one line, before anything is written.

A failed start must leave nothing that blocks the corrected command; the
workdir's storage is checked before the first step; several processes are
configured from keys or JAX's variables; a checkpoint of another topology is
refused; results_sheet skips what it cannot parse.
"""
import contextlib
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from experiments import results_sheet
from tests.training.test_loop import mock, tiny_config
from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import loop

ROOT = pathlib.Path(__file__).resolve().parents[2]


def config():
  return tiny_config("cifar100", "cifar_resnet_tiny")


@pytest.mark.parametrize("key, value", [
    ("learning_rate", math.nan), ("learning_rate", math.inf), ("loss.lam", math.nan),
    ("weight_decay", -math.inf), ("momentum", math.nan)])
def test_nan_and_inf_are_refused_naming_the_key(key, value):
  c = config()
  with c.unlocked():
    parent, name = (c.loss, key.split(".")[1]) if "." in key else (c, key)
    parent[name] = value
  with pytest.raises(ValueError, match=rf"config\.{key} must be a finite number, got"):
    config_lib.validate_config(c)


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, r"config\.seed must lie in \[0, 2\*\*31\)"),
    ("max_checkpoints_to_keep", 1, r"max_checkpoints_to_keep must be >= 2"),
])
def test_seed_and_checkpoints_kept_are_checked(key, value, message):
  c = config()
  c[key] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate_config(c)


@pytest.mark.parametrize("key, value, error, message", [
    ("dataset", "cifar1000", ValueError, "cifar1000"),
    ("model", "resnet_tinyy", ValueError, "resnet_tinyy"),
    ("data_dir", "EMPTY", FileNotFoundError, "not prepared"),
    ("loss.power", 0.0, ValueError, "power"),
])
def test_a_failed_start_writes_nothing(tmp_path, key, value, error, message):
  c = config()
  if value == "EMPTY":
    value = str(tmp_path / "empty")
  if "." in key:
    c.loss[key.split(".")[1]] = value
  else:
    c[key] = value
  workdir = tmp_path / "run"
  # tfds's mock_data serves any data dir, so the unprepared one is read for real.
  data_context = contextlib.nullcontext() if key == "data_dir" else mock()
  with data_context, pytest.raises(error, match=message):
    loop.train_and_evaluate(c, str(workdir))
  # No config.json (or anything else) to refuse the corrected command with.
  assert not workdir.exists() or not any(workdir.iterdir())


@contextlib.contextmanager
def unprivileged():
  """As root, act as 'nobody' (root ignores permissions); else as we are."""
  if os.geteuid() != 0:
    yield
    return
  os.seteuid(65534)
  try:
    yield
  finally:
    os.seteuid(0)


def test_unusable_workdirs_are_refused_in_one_line_naming_the_path(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("")
  with pytest.raises(NotADirectoryError, match=f"{a_file} is a file"):
    checkpoint_lib.check_workdir(str(a_file))
  run = tmp_path / "run"
  run.mkdir()
  (run / "checkpoints").write_text("")
  with pytest.raises(NotADirectoryError, match=f"{run / 'checkpoints'} is a file"):
    checkpoint_lib.check_workdir(str(run))
  read_only = tmp_path / "read_only"
  read_only.mkdir(mode=0o555)
  tmp_path.chmod(0o755)
  with unprivileged(), pytest.raises(PermissionError,
                                     match=f"The workdir {read_only} is not writable"):
    checkpoint_lib.check_workdir(str(read_only))
  with unprivileged(), pytest.raises(PermissionError, match="not writable"):
    checkpoint_lib.check_workdir(str(read_only / "new"))  # cannot be created either


def test_the_loop_checks_the_workdir_before_writing(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "checkpoints").write_text("")
  with mock(), pytest.raises(NotADirectoryError, match="checkpoints is a file"):
    loop.train_and_evaluate(config(), str(run))
  assert sorted(os.listdir(run)) == ["checkpoints"]


def test_a_garbage_or_truncated_config_json_is_named(tmp_path):
  for text in ("garbage", '{"dataset": "cifar'):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is not valid JSON"):
      checkpoint_lib.check_workdir_config(str(tmp_path), config().to_dict())


def test_another_topology_is_refused_unless_allowed(caplog):
  saved = {"process_count": 2, "device_count": 4}
  with pytest.raises(ValueError, match=r"process_count 2 -> 1, device_count 4 -> 8"):
    loop._check_topology(saved, allow=False)
  loop._check_topology(saved, allow=True)
  assert "another topology" in caplog.text
  loop._check_topology({"process_count": 1, "device_count": 8}, allow=False)
  loop._check_topology({}, allow=False)  # a checkpoint from before topologies were saved


def test_distributed_keys_and_jax_variables(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda *args, **kwargs: calls.append((args, kwargs)))
  c = config()
  c.distributed = True
  c.coordinator_address, c.num_processes, c.process_id = "10.0.0.1:1234", 4, 3
  loop.initialize_distributed(c)
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.2:99")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
  monkeypatch.setenv("JAX_PROCESS_ID", "1")
  c.coordinator_address, c.num_processes, c.process_id = "", 0, -1
  loop.initialize_distributed(c)
  assert [args for args, _ in calls] == [("10.0.0.1:1234", 4, 3), ("10.0.0.2:99", 2, 1)]
  assert calls[0][1] == {"heartbeat_timeout_seconds": 100}


def _train_cli(*args):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_"))}
  return subprocess.run(
      [sys.executable, "-m", "experiments.train", *args, "--workdir=/nonexistent/never"],
      cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(env, JAX_PLATFORMS="cpu"))


def test_cli_typo_missing_config_file_and_no_cluster_are_one_line():
  demo = "--config=experiments/configs/fashion_mnist_demo.py"
  # A typo in an override of a parametrised config (`config.py:arg`).
  typo = _train_cli("--config=experiments/configs/paper.py:cifar100,cifar_resnet18,zipf",
                    "--config.loss.lamb=1")
  missing = _train_cli("--config=experiments/configs/no_such_config.py")
  no_cluster = _train_cli(demo, "--config.distributed=True")
  for result in (typo, missing, no_cluster):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, result.stderr
  assert 'Did you mean "lam" instead of "lamb"?' in typo.stderr
  assert "no_such_config.py" in missing.stderr
  assert "--config.coordinator_address" in no_cluster.stderr
  assert "JAX_NUM_PROCESSES" in no_cluster.stderr


def test_results_sheet_skips_unparseable_lines_with_a_warning(tmp_path, caplog):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(json.dumps(config().to_dict(), default=str))
  good = [{"step": 2, "eval_top1": 10.0, "eval_top5": 50.0, "epoch": 1.0},
          {"step": 4, "eval_top1": 30.0, "eval_top5": 60.0, "epoch": 2.0}]
  (run / "metrics.jsonl").write_text(
      json.dumps(good[0]) + "\n\x00\x00garbage\n[1, 2]\n" + json.dumps(good[1]) + "\n" +
      json.dumps({"step": 6, "eval_top1": 99.0})[:20])
  loaded = results_sheet.load_run(str(run))
  assert [e["step"] for e in loaded["evals"]] == [2, 4] and loaded["best_top1"] == 30.0
  assert "Skipped 3 unreadable line(s)" in caplog.text and "line 2, 3, 5" in caplog.text
