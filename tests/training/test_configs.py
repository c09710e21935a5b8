"""Every experiment config builds; the recipes are SPEC section 6; the entry point parses.

Building means: valid keys and values, and the model, optimizer, schedule
and objective constructed (no parameters initialised, so it stays cheap).
"""
import glob
import importlib.util
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from zipfls_jax import data
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
CONFIG_FILES = sorted(
    f for f in glob.glob(os.path.join(CONFIG_DIR, "*.py")) if not f.endswith("__init__.py"))


def load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def test_there_is_a_config_for_every_run_of_spec_section_6():
  names = {os.path.basename(f)[:-3] for f in CONFIG_FILES}
  for dataset in ("cifar100", "tiny_imagenet"):
    for model in ("resnet18", "densenet121"):
      for method in ("ce", "ls", "zipf"):
        assert f"{dataset}_{model}_{method}" in names
  for dataset in ("imagenet", "inat21"):
    for method in ("ce", "ls", "zipf"):
      assert f"{dataset}_resnet50_{method}" in names
  for arch in ("resnet18", "resnet101", "resnext50_32x4d", "resnext101_32x8d", "densenet121",
               "mobilenet_v2"):
    assert f"imagenet_{arch}_zipf" in names
  for distribution in ("constant", "random_uniform", "random_gaussian", "random_pareto",
                       "sorted_pareto", "linear_decay", "exponential_decay", "unbiased_zipf"):
    assert f"ablation_tiny_imagenet_resnet18_{distribution}" in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_builds(path):
  config = load(path)
  config_lib.validate_config(config)
  spec = data.get_dataset_spec(config.dataset)
  setup = loop.build_setup(config, num_train_examples=50_000)
  assert setup.num_classes == spec.num_classes
  assert setup.total_steps > 0 and setup.steps_per_epoch > 0
  assert float(setup.learning_rate_fn(jnp.asarray(0))) == pytest.approx(config.learning_rate)


@pytest.mark.parametrize("name, lam, upsample, batch, epochs, schedule", [
    ("cifar100_resnet18_zipf", 0.1, 2, 128, 200, "step"),
    ("tiny_imagenet_resnet18_zipf", 1.0, 2, 128, 200, "step"),
    # The authors' CIFAR DenseNet voted on the unresized 4x4 map.
    ("tiny_imagenet_densenet121_zipf", 1.0, 0, 128, 200, "step"),
    ("cifar100_densenet121_zipf", 0.1, 0, 128, 200, "step"),
    ("imagenet_resnet50_zipf", 0.1, 0, 256, 100, "step_every"),
    ("inat21_resnet50_zipf", 1.0, 0, 256, 100, "step_every"),
])
def test_recipes_follow_spec_section_6(name, lam, upsample, batch, epochs, schedule):
  config = load(os.path.join(CONFIG_DIR, name + ".py"))
  assert (config.loss.lam, config.vote_upsample, config.batch_size, config.num_epochs,
          config.lr_schedule) == (lam, upsample, batch, epochs, schedule)
  assert (config.learning_rate, config.momentum, config.nesterov, config.weight_decay,
          config.warmup_epochs) == (0.1, 0.9, False, 1e-4, 0.0)
  assert config.loss.method == "zipf" and config.loss.rank_by == "votes"


@pytest.mark.parametrize("key, value, match", [
    ("lr_schedule", "linear", r"config\.lr_schedule must be one of .*got 'linear'"),
    ("lr_decay_at", (0.5, 1.5), r"config\.lr_decay_at must hold fractions .*got \(0\.5, 1\.5\)"),
    ("learning_rate", -0.1, r"config\.learning_rate must be > 0, got -0\.1"),
    ("lr_decay_every_epochs", 0.0, r"config\.lr_decay_every_epochs must be > 0, got 0\.0"),
    ("momentum", -0.9, r"config\.momentum must be >= 0, got -0\.9"),
    ("image_size", -32, r"config\.image_size must be >= 0, got -32"),
])
def test_bad_values_name_the_config_key(key, value, match):
  config = load(os.path.join(CONFIG_DIR, "cifar100_resnet18_zipf.py"))
  config[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate_config(config)


def test_entry_point_names_a_bad_override_key():
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       f"--config={os.path.join(CONFIG_DIR, 'cifar100_resnet18_zipf.py')}",
       "--workdir=/nonexistent", "--config.loss.lamda=0.5"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert "lamda" in result.stderr


def test_entry_point_reports_missing_data_without_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       f"--config={os.path.join(CONFIG_DIR, 'cifar100_resnet18_zipf.py')}",
       f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'no_data'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 1
  assert "error: Dataset 'cifar100' is not prepared" in result.stderr
  assert "zipfls_jax.data.prepare --dataset=cifar100" in result.stderr
  assert "Traceback" not in result.stderr


def test_demo_refuses_an_unknown_method_before_training(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.demo", "--methods=ce,zipff",
       f"--workdir={tmp_path / 'demo'}"],
      cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert "--methods has unknown ['zipff']" in result.stderr
  assert not (tmp_path / "demo").exists()
