"""Offline Fashion-MNIST preparation in tfds's own `fashion_mnist` format."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from zipfls_jax.data import fashion_mnist
from zipfls_jax.data import network

from tests.data import conftest


def test_read_idx_by_hand(tmp_path):
  path = tmp_path / "labels-idx1-ubyte"
  # Magic 2049 (unsigned byte, 1 dimension), 3 items, then the bytes.
  path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 255]))
  np.testing.assert_array_equal(
      fashion_mnist.read_idx(path, magic=2049), [7, 0, 255])
  with pytest.raises(ValueError, match="magic 2049, expected 2051"):
    fashion_mnist.read_idx(path, magic=2051)


def test_prepared_copy_is_tfds_fashion_mnist(fashion_data_dir, tmp_path):
  prepared = tfds.builder("fashion_mnist", data_dir=fashion_data_dir)
  from_code = tfds.builder("fashion_mnist", data_dir=str(tmp_path))
  assert prepared.is_prepared() and not from_code.is_prepared()
  assert str(prepared.info.version) == str(tfds_mnist.FashionMNIST.VERSION)
  assert prepared.info.features.to_json() == from_code.info.features.to_json()
  assert prepared.info.features["label"].names[0] == "T-shirt/top"
  assert prepared.info.splits["train"].num_examples == conftest.NUM_TRAIN
  assert prepared.info.splits["test"].num_examples == conftest.NUM_TEST
  # The stored images are the IDX images, label for label.
  source = conftest.indexed_images(conftest.NUM_TEST, seed=2)
  for ex in tfds.as_numpy(prepared.as_dataset(split="test[:20]")):
    index = int(ex["image"][0, 0, 0]) * 256 + int(ex["image"][0, 1, 0])
    np.testing.assert_array_equal(ex["image"][..., 0], source[index])
    assert ex["label"] == index % 10


def test_preparing_again_returns_without_rewriting(fashion_data_dir):
  info = os.path.join(fashion_data_dir, "fashion_mnist", "3.0.1",
                      "dataset_info.json")
  before = os.stat(info).st_mtime_ns
  path = fashion_mnist.prepare_fashion_mnist(fashion_data_dir)
  assert os.fspath(path) == os.path.dirname(info)
  assert os.stat(info).st_mtime_ns == before


def test_no_source_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
  # Even as root with apt-get at hand, the library installs nothing.
  monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
  monkeypatch.setattr(shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
  commands = []
  monkeypatch.setattr(subprocess, "run", lambda *a, **k: commands.append(a))
  monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: commands.append(a))
  probes = []
  monkeypatch.setattr(network, "can_reach",
                      lambda url, **kw: probes.append(url) or False)
  with pytest.raises(FileNotFoundError) as error:
    fashion_mnist.prepare_fashion_mnist(str(tmp_path / "tfds"))
  message = str(error.value)
  assert "apt-get install -y dataset-fashion-mnist" in message  # said, not done
  assert str(tmp_path / "tfds" / "downloads" / "manual") in message
  assert "internet" in message
  assert len(probes) == 1  # Checked reachability once, downloaded nothing.
  assert commands == []
  assert not (tmp_path / "tfds" / "fashion_mnist").exists()
  with pytest.raises(FileNotFoundError, match="idx_dir="):
    fashion_mnist.prepare_fashion_mnist(
        str(tmp_path / "tfds"), idx_dir=str(tmp_path))


def test_manual_dir_idx_files_are_found(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "none"))
  monkeypatch.setattr(network, "can_reach", lambda url, **kw: False)
  data_dir = tmp_path / "tfds"
  conftest.write_fashion_idx(data_dir / "downloads" / "manual",
                             num_train=16, num_test=8)
  fashion_mnist.prepare_fashion_mnist(str(data_dir))
  builder = tfds.builder("fashion_mnist", data_dir=str(data_dir))
  assert builder.info.splits["test"].num_examples == 8


def test_command_line_prepares_quietly_in_a_log(tmp_path):
  idx_dir = conftest.write_fashion_idx(tmp_path / "idx", num_train=16, num_test=8)
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  out = subprocess.run(
      [sys.executable, "-m", "zipfls_jax.data.prepare", "--dataset=fashion_mnist",
       f"--data_dir={tmp_path / 'tfds'}", f"--manual_dir={idx_dir}"],
      capture_output=True, text=True, check=True, env=env,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert "fashion_mnist ready in" in out.stdout
  log = out.stdout + out.stderr
  # stderr is a pipe here, as in a log file: no tqdm bars, no escape codes,
  # and none of TensorFlow's C++ INFO notices (oneDNN, CPU features).
  assert "\r" not in log and "\x1b[" not in log, log
  assert "examples/s" not in log
  assert not [line for line in log.splitlines() if line.startswith("I0000")], log


def test_command_line_without_a_dataset_lists_what_each_needs(fashion_data_dir):
  before = sorted(os.walk(fashion_data_dir))
  out = subprocess.run(
      [sys.executable, "-m", "zipfls_jax.data.prepare", f"--data_dir={fashion_data_dir}"],
      capture_output=True, text=True, check=True,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  text = " ".join(out.stdout.split())  # undo the line wrapping
  manual = os.path.join(fashion_data_dir, "downloads", "manual")
  for name, files in [
      ("cifar100", ["cifar-100-binary.tar.gz"]),
      ("tiny_imagenet", ["tiny-imagenet-200.zip", "val/val_annotations.txt"]),
      ("imagenet2012", ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"]),
      ("i_naturalist2021", ["train_mini.tar.gz", "val.json.tar.gz"]),
      ("fashion_mnist", ["t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist"])]:
    assert f"--dataset={name} --data_dir={fashion_data_dir}" in text, name
    for file in files:
      assert file in text, (name, file)
  assert text.count(manual) >= 4  # where to place them
  assert "cifar100 (100 classes): not prepared." in text
  assert f"fashion_mnist (10 classes): prepared in {fashion_data_dir}" in text
  assert out.stderr.count("\n") < 5, out.stderr  # no tfds warning per empty folder
  assert sorted(os.walk(fashion_data_dir)) == before  # listing prepares nothing
