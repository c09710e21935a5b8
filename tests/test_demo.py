"""`make demo` (experiments/demo.py): the apt offer is the demo's, and it says so."""
import os
import shutil
import subprocess
import types

import pytest

from experiments import demo
from zipfls_jax.data import fashion_mnist


@pytest.fixture
def as_root_with_apt(monkeypatch, tmp_path):
  monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
  monkeypatch.setattr(shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
  debian_dir = tmp_path / "debian"
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(debian_dir))
  commands = []

  def run(command, **kwargs):
    commands.append(command)
    if command[:2] == ["apt-get", "install"]:  # what the package would put there
      from tests.data import conftest  # pylint: disable=g-import-not-at-top
      conftest.write_fashion_idx(debian_dir, num_train=4, num_test=4)
    return types.SimpleNamespace(returncode=0)

  monkeypatch.setattr(subprocess, "run", run)
  return commands


def test_demo_installs_the_debian_package_as_root_and_says_so(as_root_with_apt, capsys):
  assert demo.install_debian_fashion_mnist()
  assert as_root_with_apt == [["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]]
  assert "Installing the Debian package dataset-fashion-mnist with apt-get" in (
      capsys.readouterr().out)


def test_demo_without_apt_prints_the_library_instructions(as_root_with_apt, monkeypatch,
                                                          tmp_path, capsys):
  monkeypatch.setattr(fashion_mnist.network, "can_reach", lambda url, **kw: False)
  with pytest.raises(SystemExit):
    demo.prepare_data(str(tmp_path / "tfds"), allow_apt=False)
  assert as_root_with_apt == []
  assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err


def test_not_root_installs_nothing(monkeypatch):
  monkeypatch.setattr(os, "geteuid", lambda: 1000, raising=False)
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
  assert not demo.install_debian_fashion_mnist()


def test_breakdown_puts_the_unmeasured_rest_under_train_steps():
  seconds = {"setup": 4.0, "compile": 30.0, "eval": 6.0, "total": 100.0}
  assert demo.format_breakdown(seconds) == (
      "setup 4 s, compile 30 s, train steps 60 s, evaluation 6 s")
