"""Every published run's config builds; the recipes are method.md section 6; the entry point parses.

Building means: valid keys and values, and the model, optimizer, schedule
and objective constructed (no parameters initialised, so it stays cheap).
"""
import importlib.util
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from experiments import results_sheet
from experiments.configs import paper
from zipfls_jax import data
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
PAPER = os.path.join(CONFIG_DIR, "paper.py")
DEMO = os.path.join(CONFIG_DIR, "fashion_mnist_demo.py")
PUBLISHED = paper.published_runs()
COMPARISON = paper.comparison_runs()


def load(path, arg=None):
  """What `--config=path[:arg]` gives (ml_collections passes `arg` to get_config)."""
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def test_there_is_a_config_for_every_run_of_method_section_6():
  runs = set(PUBLISHED)
  for dataset in ("cifar100", "tiny_imagenet"):
    for model in ("cifar_resnet18", "cifar_densenet121"):
      for method in ("ce", "ls", "zipf"):
        assert f"{dataset},{model},{method}" in runs
  for dataset in ("imagenet2012", "i_naturalist2021"):
    for method in ("ce", "ls", "zipf"):
      assert f"{dataset},resnet50,{method}" in runs
  for arch in ("resnet18", "resnet101", "resnext50_32x4d", "resnext101_32x8d", "densenet121",
               "mobilenet_v2"):
    assert f"imagenet2012,{arch},zipf" in runs
  for distribution in ("constant", "random_uniform", "random_gaussian", "random_pareto",
                       "sorted_pareto", "linear_decay", "exponential_decay", "unbiased_zipf"):
    assert f"tiny_imagenet,cifar_resnet18,zipf,{distribution}" in runs
  assert len(runs) == len(PUBLISHED) == 48
  # Every cell of the results sheet's paper table is a run one can start
  # (BAN's with a teacher workdir added).
  startable = runs | set(COMPARISON) | {"tiny_imagenet,cifar_resnet18,ban"}
  for dataset, model, method in results_sheet.PAPER:
    assert f"{dataset},{model},{method}" in startable


def test_python_m_lists_the_published_and_the_comparison_runs():
  result = subprocess.run([sys.executable, "-m", "experiments.configs.paper"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
  runs = [line for line in result.stdout.splitlines() if not line.startswith("#")]
  assert runs == PUBLISHED + COMPARISON


def test_the_comparison_covers_every_baseline_on_the_paper_cells():
  for method in ("tf_kd", "cs_kd", "bake", "ddgsd", "byot", "ols", "ps_kd"):
    for cell in ("tiny_imagenet,cifar_resnet18", "cifar100,cifar_resnet18",
                 "i_naturalist2021,resnet50"):
      assert f"{cell},{method}" in COMPARISON
    for cell in ("cifar100,cifar_densenet121", "tiny_imagenet,cifar_densenet121"):
      # The DenseNets have no BYOT exits.
      assert (f"{cell},{method}" in COMPARISON) == (method != "byot")
  assert len(COMPARISON) == len(set(COMPARISON)) == 5 * 7 - 2


@pytest.mark.parametrize("arg, expected", [
    # The Zipf authors' values (docs/method.md section 4).
    ("tiny_imagenet,cifar_resnet18,tf_kd", {"loss.tf_kd.temperature": 20.0,
                                            "loss.tf_kd.multiplier": 100.0}),
    ("cifar100,cifar_densenet121,tf_kd", {"loss.tf_kd.temperature": 40.0,
                                          "loss.tf_kd.multiplier": 1.0}),
    ("i_naturalist2021,resnet50,tf_kd", {"loss.tf_kd.temperature": 20.0,
                                         "loss.tf_kd.multiplier": 1.0}),
    ("tiny_imagenet,cifar_resnet18,cs_kd", {"loss.cs_kd.weight": 1.0}),
    ("i_naturalist2021,resnet50,cs_kd", {"loss.cs_kd.weight": 3.0}),
    ("tiny_imagenet,cifar_resnet18,bake", {"loss.bake.omega": 0.9, "loss.bake.friends": 1}),
    ("cifar100,cifar_resnet18,bake", {"loss.bake.omega": 0.5, "loss.bake.friends": 3}),
    ("i_naturalist2021,resnet50,bake", {"loss.bake.omega": 0.5, "loss.bake.friends": 1}),
    ("tiny_imagenet,cifar_resnet18,byot", {"exits": True, "exit_type": "bottleneck",
                                           "loss.byot.alpha": 0.3, "loss.byot.beta": 0.03}),
    ("tiny_imagenet,cifar_resnet18,ddgsd", {"loss.ddgsd.kl_weight": 1.0,
                                            "loss.ddgsd.mmd_weight": 5e-4}),
])
def test_baseline_settings_follow_method_section_4(arg, expected):
  config = load(PAPER, arg)
  assert config.loss.method == arg.split(",")[-1]
  for key, value in expected.items():
    node = config
    for part in key.split("."):
      node = node[part]
    assert node == value, key


@pytest.mark.parametrize("arg, key, value", [
    ("tiny_imagenet,cifar_resnet18,zipf,constant", "loss.distribution", "constant"),
    ("tiny_imagenet,cifar_resnet18,zipf,linear_decay", "loss.smallest_prob", 0.001),
    ("tiny_imagenet,cifar_resnet18,zipf,exponential_decay", "loss.decay", 1.0),
    ("tiny_imagenet,cifar_resnet18,zipf,logit_rank", "loss.rank_by", "logits"),
    ("tiny_imagenet,cifar_resnet18,zipf,correct_only", "loss.correct_only", True),
    ("tiny_imagenet,cifar_resnet18,zipf,ls_zipf", "loss.method", "ls_zipf"),
    ("tiny_imagenet,cifar_resnet18,zipf,exits", "loss.exit_weight", 1.0),
])
def test_an_ablation_changes_only_its_keys(arg, key, value):
  def flat(config, prefix=""):
    out = {}
    for k, v in config.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out
  base = flat(load(PAPER, "tiny_imagenet,cifar_resnet18,zipf").to_dict())
  ablated = flat(load(PAPER, arg).to_dict())
  assert ablated[key] == value
  changed = {k for k in base if base[k] != ablated[k]}
  expected = {"exits": {"exits", "vote_exits", "loss.exit_weight"},
              "linear_decay": {"loss.distribution", "loss.smallest_prob"},
              "exponential_decay": {"loss.distribution"}}  # decay 1.0 is the default
  assert changed == expected.get(arg.split(",")[-1], {key})


@pytest.mark.parametrize("arg, match", [
    (None, r"needs 'dataset,model,method\[,ablation\]'.*got None"),
    ("cifar100,cifar_resnet18", r"needs 'dataset,model,method.*got 'cifar100,cifar_resnet18'"),
    ("cifar10,cifar_resnet18,zipf", r"dataset must be one of .*got 'cifar10'"),
    ("cifar100,cifar_resnet18,zipff", r"method must be one of .*got 'zipff'"),
    ("cifar100,cifar_resnet18,zipf,constnt", r"ablation must be one of .*got 'constnt'"),
    ("cifar100,cifar_resnet18,ce,constant", r"variant of method 'zipf', got method 'ce'"),
])
def test_a_bad_argument_is_refused_with_what_is_expected(arg, match):
  with pytest.raises(ValueError, match=match):
    load(PAPER, arg)


@pytest.mark.parametrize("path, arg",
                         [(PAPER, run) for run in PUBLISHED + COMPARISON] + [(DEMO, None)],
                         ids=[*PUBLISHED, *COMPARISON, "fashion_mnist_demo"])
def test_config_builds(path, arg):
  config = load(path, arg)
  config_lib.validate_config(config)
  spec = data.get_dataset_spec(config.dataset)
  setup = loop.build_setup(config, num_train_examples=50_000)
  assert setup.num_classes == spec.num_classes
  assert setup.total_steps > 0 and setup.steps_per_epoch > 0
  assert float(setup.learning_rate_fn(jnp.asarray(0))) == pytest.approx(config.learning_rate)


@pytest.mark.parametrize("arg, lam, upsample, batch, epochs, schedule", [
    ("cifar100,cifar_resnet18,zipf", 0.1, 2, 128, 200, "step"),
    ("tiny_imagenet,cifar_resnet18,zipf", 1.0, 2, 128, 200, "step"),
    # The authors' CIFAR DenseNet voted on the unresized 4x4 map.
    ("tiny_imagenet,cifar_densenet121,zipf", 1.0, 0, 128, 200, "step"),
    ("cifar100,cifar_densenet121,zipf", 0.1, 0, 128, 200, "step"),
    ("imagenet2012,resnet50,zipf", 0.1, 0, 256, 100, "step_every"),
    ("i_naturalist2021,resnet50,zipf", 1.0, 0, 256, 100, "step_every"),
])
def test_recipes_follow_method_section_6(arg, lam, upsample, batch, epochs, schedule):
  config = load(PAPER, arg)
  assert (config.loss.lam, config.vote_upsample, config.batch_size, config.num_epochs,
          config.lr_schedule) == (lam, upsample, batch, epochs, schedule)
  assert (config.learning_rate, config.momentum, config.nesterov, config.weight_decay,
          config.warmup_epochs) == (0.1, 0.9, False, 1e-4, 0.0)
  assert config.loss.method == "zipf" and config.loss.rank_by == "votes"


@pytest.mark.parametrize("key, value, match", [
    ("lr_schedule", "linear", r"lr_schedule must be one of .*got 'linear'"),
    ("lr_decay_at", (0.5, 1.5), r"lr_decay_at must hold fractions .*got \(0\.5, 1\.5\)"),
    ("learning_rate", -0.1, r"learning_rate must be > 0, got -0\.1"),
    ("lr_decay_every_epochs", 0.0, r"lr_decay_every_epochs must be > 0, got 0\.0"),
    ("momentum", -0.9, r"momentum must be >= 0, got -0\.9"),
    ("image_size", -32, r"config\.image_size must be >= 0, got -32"),
    ("eval_every_epochs", 0.0, r"config\.eval_every_epochs must be > 0, got 0\.0"),
])
def test_bad_values_name_the_config_key(key, value, match):
  # What a run does before it writes anything: check, then build.
  config = load(PAPER, "cifar100,cifar_resnet18,zipf")
  config[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate_config(config)
    loop.build_setup(config, num_train_examples=50_000)


def test_entry_point_reports_missing_data_without_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       f"--config={PAPER}:cifar100,cifar_resnet18,zipf",
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


def test_the_results_sheet_and_the_demo_name_every_method():
  from zipfls_jax import training  # pylint: disable=g-import-not-at-top
  assert set(results_sheet.METHOD_NAMES) == set(training.METHOD_NAMES)
  for method in training.METHOD_NAMES:
    config = load(DEMO, method)
    assert config.loss.method == method and config.dataset == "fashion_mnist"
