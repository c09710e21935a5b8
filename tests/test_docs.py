"""docs/method.md: the sections code and docs refer to, its examples, and its links."""
import pathlib
import re

import numpy as np
import jax.numpy as jnp

import zipfls_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"

# Code and docs cite "docs/method.md section N"; the numbering is fixed.
SECTIONS = {
    1: "soft targets",
    2: "loss",
    3: "ablation distributions",
    4: "baselines",
    5: "models",
    6: "training recipes",
    7: "published results",
    8: "known faults",
}


def test_method_page_has_the_eight_numbered_sections_in_order():
  text = METHOD.read_text()
  assert "SPEC" not in text  # users do not have the project's internal notes
  titles = re.findall(r"^## (\d+)\. (.+)$", text, flags=re.M)
  assert [int(n) for n, _ in titles] == list(SECTIONS)
  for (number, title) in titles:
    assert SECTIONS[int(number)] in title.lower(), (number, title)


def test_every_section_reference_exists():
  text = METHOD.read_text()
  subsections = set(re.findall(r"^### (\d+\.\d+) ", text, flags=re.M))
  assert subsections == {"1.1", "1.2", "1.3", "1.4", "4.1"}
  cited = []
  for path in list(ROOT.glob("zipfls_jax/**/*.py")) + list(ROOT.glob("experiments/**/*.py")) + [
      ROOT / "README.md", ROOT / "experiments" / "README.md"]:
    cited += re.findall(r"docs/method\.md\)?,? sections? (\d+)(?:\.(\d+))?", path.read_text())
  assert cited, "the README links the page with a section number"
  for major, minor in cited:
    assert 1 <= int(major) <= 8
    assert not minor or f"{major}.{minor}" in subsections


def test_readme_links_the_method_page():
  assert "(docs/method.md)" in (ROOT / "README.md").read_text()


def test_method_page_examples_match_the_library():
  text = METHOD.read_text()
  assert "vote counts `(3, 0, 3, 1)` give ranks `(1, 4, 1, 3)`" in text
  np.testing.assert_array_equal(zipfls_jax.rank_min(jnp.array([3, 0, 3, 1])), [1, 4, 1, 3])
  assert "so `q = (0, 3/13, 6/13, 4/13)`" in text
  q = zipfls_jax.zipf_targets(jnp.array([[3., 0., 2., 1.]]), jnp.array([0]))
  np.testing.assert_allclose(q[0], np.array([0, 3, 6, 4]) / 13, rtol=1e-6)
