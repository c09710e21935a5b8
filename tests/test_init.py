"""The package's import promises: the loss pulls no TensorFlow, flax or optax."""
import subprocess
import sys

import zipfls_jax


def _modules_after(statement):
  code = (f"import sys; {statement}; "
          "print(' '.join(m for m in ('tensorflow', 'tensorflow_datasets', 'flax', 'optax') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  return set(out.stdout.split())


def test_loss_imports_neither_tensorflow_nor_flax_nor_optax():
  assert _modules_after("import zipfls_jax") == set()


def test_models_and_training_import_no_tensorflow():
  assert not {"tensorflow", "tensorflow_datasets"} & _modules_after(
      "import zipfls_jax.models, zipfls_jax.training, zipfls_jax.data")


def test_public_api_is_exported():
  for name in zipfls_jax.__all__:
    assert callable(getattr(zipfls_jax, name)) or name in ("DEFAULT_LAM", "DISTRIBUTIONS",
                                                           "RANK_BY")
  assert set(zipfls_jax.DISTRIBUTIONS) == {
      "zipf", "constant", "random_uniform", "random_gaussian", "random_pareto",
      "sorted_pareto", "linear_decay", "exponential_decay", "unbiased_zipf"}
