"""The README's Flax train-step example runs as written and trains."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_train_step_example_runs_and_lowers_the_loss():
  block = next(b for b in _python_blocks() if "def train_step" in b)
  namespace = {}
  exec(compile(block, str(README), "exec"), namespace)  # pylint: disable=exec-used
  first = float(namespace["loss"])
  params, opt_state = namespace["params"], namespace["opt_state"]
  for _ in range(5):
    params, opt_state, loss = namespace["train_step"](params, opt_state, namespace["images"],
                                                      namespace["labels"])
  assert np.isfinite(first) and float(loss) < first

  # The correct-only snippet, on that model's outputs.
  snippet = next(b for b in _python_blocks() if "masked_batch_mean" in b)
  namespace["out"] = namespace["model"].apply({"params": params}, namespace["images"], votes=True)
  exec(compile(snippet, str(README), "exec"), namespace)  # pylint: disable=exec-used
  terms = namespace["terms"]
  correct = np.asarray(terms.correct)
  expected = np.asarray(terms.ce).mean() + 0.1 * (
      np.asarray(terms.kl)[correct].mean() if correct.any() else 0.0)
  np.testing.assert_allclose(namespace["loss"], expected, rtol=1e-5)
  assert namespace["out"].votes.shape == (8, 14 * 14 * 4)


def test_readme_zipf_law_example_accumulates_padded_batches():
  block = next(b for b in _python_blocks() if "ranked_probability_sums" in b)
  rng = np.random.default_rng(0)
  batches = [(rng.normal(size=(8, 10)).astype(np.float32), rng.integers(0, 10, 8),
              np.arange(8) < n) for n in (8, 3)]
  import jax  # pylint: disable=g-import-not-at-top
  import zipfls_jax  # pylint: disable=g-import-not-at-top
  namespace = {"jax": jax, "zipfls_jax": zipfls_jax, "num_classes": 10,
               "eval_batches": [(z, y.astype(np.int32), m) for z, y, m in batches]}
  exec(compile(block, str(README), "exec"), namespace)  # pylint: disable=exec-used
  assert float(np.sum(namespace["sums"].count)) == 11
  assert np.isfinite(float(namespace["fit"].exponent))
