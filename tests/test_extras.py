"""A missing optional dependency names the pip extra that installs it."""
import subprocess
import sys

import pytest


def _import_without(blocked, statement):
  # `sys.modules[name] = None` makes both `import name` and find_spec fail,
  # as if the package were not installed.
  code = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) + statement
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("blocked, statement, extra", [
    (["flax"], "import zipfls_jax.models", "models"),
    (["optax"], "import zipfls_jax.training", "experiments"),
    (["tensorflow_datasets"], "from zipfls_jax import data; data.prepare_dataset", "experiments"),
])
def test_missing_extra_names_it(blocked, statement, extra):
  result = _import_without(blocked, statement)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("ModuleNotFoundError: "), result.stderr
  assert f"needs {blocked[0]}, which is not installed" in last
  assert f"pip install 'zipfls_jax[{extra}]'" in last


def test_the_loss_and_the_data_specs_need_no_extra():
  result = _import_without(
      ["flax", "optax", "tensorflow", "tensorflow_datasets", "orbax"],
      "import zipfls_jax; from zipfls_jax import data; print(data.get_dataset_spec('cifar100')"
      ".num_classes)")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "100"
