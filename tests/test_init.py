"""The package's import promises: the loss pulls no TensorFlow, flax or optax."""
import subprocess
import sys

import zipfls_jax


WATCHED = ("tensorflow", "tensorflow_datasets", "flax", "optax")


def _modules_after_each(*statements):
  """Which WATCHED modules are imported after each statement, run in turn in one fresh process."""
  code = "import sys\n" + "".join(
      f"{statement}\nprint('modules:', *(m for m in {WATCHED!r} if m in sys.modules))\n"
      for statement in statements)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  lines = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("modules:")]
  assert len(lines) == len(statements), out.stdout + out.stderr
  return [set(line) for line in lines]


def test_the_loss_the_specs_the_models_and_training_import_what_they_promise():
  # One process, each statement after the previous ones: a module imported
  # by an earlier statement shows in every later set, so an empty or
  # TensorFlow-free set also clears the statements before it.
  loss, specs, rest = _modules_after_each(
      "import zipfls_jax",
      "import zipfls_jax.data as d; d.get_dataset_spec('cifar100')",
      "import zipfls_jax.models, zipfls_jax.training, zipfls_jax.data")
  assert loss == set()   # neither TensorFlow nor flax nor optax
  assert not {"tensorflow", "tensorflow_datasets"} & specs
  assert not {"tensorflow", "tensorflow_datasets"} & rest


def test_public_api_is_exported():
  for name in zipfls_jax.__all__:
    assert callable(getattr(zipfls_jax, name)) or name in ("DEFAULT_LAM", "DISTRIBUTIONS",
                                                           "RANK_BY")
  assert set(zipfls_jax.DISTRIBUTIONS) == {
      "zipf", "constant", "random_uniform", "random_gaussian", "random_pareto",
      "sorted_pareto", "linear_decay", "exponential_decay", "unbiased_zipf"}
