"""Small Fashion-MNIST-format data written locally, shared by the data tests.

The test split has 10,000 images whose first two pixels spell the image's
index (index // 256, index % 256) and whose label is index % 10, so a test
can tell exactly which examples a pipeline yielded.
"""
import gzip

import numpy as np
import pytest

NUM_TRAIN = 96
NUM_TEST = 10_000


def write_idx(path, array: np.ndarray, magic: int) -> None:
  """Writes `array` (uint8) as a gzipped IDX file, per the IDX format."""
  header = np.array([magic, *array.shape], dtype=">u4").tobytes()
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def indexed_images(n: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
  index = np.arange(n)
  images[:, 0, 0] = index // 256
  images[:, 0, 1] = index % 256
  return images


def write_fashion_idx(folder, num_train=NUM_TRAIN, num_test=NUM_TEST):
  folder.mkdir(parents=True, exist_ok=True)
  for stem, n, seed in (("train", num_train, 1), ("t10k", num_test, 2)):
    write_idx(folder / f"{stem}-images-idx3-ubyte.gz", indexed_images(n, seed),
              2051)
    write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
  return folder


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory):
  """A tfds data dir holding the synthetic `fashion_mnist`."""
  from zipfls_jax.data import prepare_fashion_mnist  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("fashion")
  idx_dir = write_fashion_idx(root / "idx")
  data_dir = root / "tfds"
  prepare_fashion_mnist(str(data_dir), idx_dir=str(idx_dir))
  return str(data_dir)
