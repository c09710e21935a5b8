"""`pip wheel .` builds a wheel of the library that installs and imports."""
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_builds_installs_and_imports(tmp_path):
  # Built from a copy, so no build/ or egg-info lands in the checkout.
  source = tmp_path / "src"
  source.mkdir()
  for name in ("setup.py", "README.md", "LICENSE"):
    shutil.copy(ROOT / name, source / name)
  shutil.copytree(ROOT / "zipfls_jax", source / "zipfls_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  # No build isolation: offline, with the setuptools of this environment.
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(tmp_path / "wheel"), str(source)], check=True)
  (wheel,) = (tmp_path / "wheel").glob("zipfls_jax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "zipfls_jax/py.typed" in names
  assert "zipfls_jax/models/densenet.py" in names
  assert not [n for n in names if n.startswith(("tests/", "experiments/", "benchmarks/"))]
  dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
  # setuptools >= 77 writes licenses/LICENSE (PEP 639); older ones write LICENSE.
  (license_name,) = [n for n in names
                     if n in (f"{dist_info}/licenses/LICENSE", f"{dist_info}/LICENSE")]
  license_text = zipfile.ZipFile(wheel).read(license_name).decode()
  assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
  metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
  assert re.search(r"^License(-Expression)?: Apache-2\.0$", metadata, flags=re.M)
  assert "Project-URL: Source, https://" in metadata
  assert "Provides-Extra: experiments" in metadata

  target = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                  str(target), str(wheel)], check=True)
  out = subprocess.run(
      [sys.executable, "-c", "import zipfls_jax, zipfls_jax.models, jax.numpy as jnp; "
       "print(zipfls_jax.__file__); "
       "print(float(zipfls_jax.zipf_label_smoothing_loss(jnp.zeros((1, 3)), jnp.array([0]), "
       "votes=jnp.array([[1, 1, 2]]))[0]))"],
      env=dict(os.environ, PYTHONPATH=str(target)), cwd=tmp_path, capture_output=True, text=True,
      check=True)
  installed_file, loss = out.stdout.split()
  assert installed_file.startswith(str(target))
  # By hand: CE of uniform logits is log 3; votes rank class 1 first, class 2
  # second, so q = (2/3, 1/3) against the uniform (1/2, 1/2) over non-targets.
  expected = math.log(3) + 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
  assert abs(float(loss) - expected) < 1e-5


def test_license_matches_setup_and_readme_url_matches_metadata():
  setup = (ROOT / "setup.py").read_text()
  assert 'license="Apache-2.0"' in setup
  assert (ROOT / "LICENSE").read_text().split()[:4] == ["Apache", "License", "Version", "2.0,"]
  url = re.search(r'^URL = "(.+)"$', setup, flags=re.M).group(1)
  assert f"git clone {url}.git" in (ROOT / "experiments" / "README.md").read_text()
