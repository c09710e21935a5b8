"""Fashion-MNIST in tfds's own `fashion_mnist` format, even offline.

`make demo` must train on a fresh machine without internet. tfds's
`fashion_mnist` builder downloads four IDX files; Debian ships the same
data in the package `dataset-fashion-mnist` (`/usr/share/datasets/
fashion-mnist/*.gz`). `prepare_fashion_mnist` writes those files with tfds's
own builder class (same name, version 3.0.1, features and splits; only the
source of the four files changes), so the pipelines read the result through
the very same tfds code as a downloaded copy.

Order of sources: an already prepared copy (returns at once); IDX files
found locally (`idx_dir`, the Debian package's folder, or the tfds manual
dir `<data_dir>/downloads/manual/`); tfds's download, only if the download
host answers within 3 seconds; otherwise a FileNotFoundError that says what
to install or copy. This module never hangs on an unreachable network and
never installs anything on the system: a library must not run a package
manager. `make demo` (experiments/demo.py) is the one place that offers to
install the Debian package, and it says so when it does.
"""
from __future__ import annotations

import gzip
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from zipfls_jax.data import network
from zipfls_jax.data import tensorflow_setup

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
# (images, labels) file stems per split, as published and as Debian ships.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC = 2051
_LABELS_MAGIC = 2049


def _idx_path(folder: epath.Path, stem: str) -> epath.Path | None:
  for name in (stem + ".gz", stem):
    if (folder / name).exists():
      return folder / name
  return None


def find_idx_files(folder) -> dict[str, tuple[epath.Path, epath.Path]] | None:
  """{split: (images, labels)} when `folder` holds all four IDX files."""
  folder = epath.Path(folder)
  found = {}
  for split, stems in IDX_FILES.items():
    paths = tuple(_idx_path(folder, stem) for stem in stems)
    if None in paths:
      return None
    found[split] = paths
  return found


def read_idx(path, *, magic: int) -> np.ndarray:
  """The uint8 array of an IDX file (gzipped or not), header checked."""
  data = epath.Path(path).read_bytes()
  if data[:2] == b"\x1f\x8b":
    data = gzip.decompress(data)
  header = np.frombuffer(data[:4], dtype=">u4")[0]
  if header != magic:
    raise ValueError(f"{path}: IDX magic {header}, expected {magic}.")
  ndim = magic & 0xFF
  shape = tuple(np.frombuffer(data[4:4 + 4 * ndim], dtype=">u4").tolist())
  array = np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: {array.size} bytes of data for shape {shape}.")
  return array.reshape(shape)


class _IdxFashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
  """tfds's FashionMNIST builder reading local IDX files, not URLs."""

  name = "fashion_mnist"

  def __init__(self, *, idx_files, **kwargs):
    self._idx_files = idx_files
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return [
        tfds.core.SplitGenerator(
            name=split,
            gen_kwargs=dict(images_path=images, labels_path=labels),
        )
        for split, (images, labels) in self._idx_files.items()
    ]

  def _generate_examples(self, images_path, labels_path):  # pylint: disable=arguments-renamed
    images = read_idx(images_path, magic=_IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=_LABELS_MAGIC).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
      raise ValueError(
          f"{images_path} and {labels_path}: images {images.shape} and"
          f" labels {labels.shape} are not N 28x28 images with N labels."
      )
    # Keys as tfds's builder uses them: the index in the file.
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image[:, :, None], "label": label}


def _local_idx_files(idx_dir, manual_dir):
  for folder in (idx_dir, DEBIAN_DIR, manual_dir):
    if folder is not None:
      found = find_idx_files(folder)
      if found is not None:
        return found
  return None


def prepare_fashion_mnist(data_dir=None, *, idx_dir=None,
                          file_format=None) -> epath.Path:
  """Makes tfds's `fashion_mnist` readable from `data_dir`; idempotent.

  Args:
    data_dir: tfds data dir (None: tfds's default, `$TFDS_DATA_DIR` or
      `~/tensorflow_datasets`).
    idx_dir: a folder with the four IDX files (gzipped or not), searched
      before the Debian folder and the tfds manual dir.
    file_format: tfds's record format, e.g. 'array_record' (None: tfds's
      default, tfrecord). A copy prepared in another format is refused.

  Returns:
    The prepared dataset's folder, `<data_dir>/fashion_mnist/3.0.1`.

  Raises:
    FileNotFoundError: no source worked; the message says what to do.
  """
  builder = tfds.builder("fashion_mnist", data_dir=data_dir)
  if builder.is_prepared():
    from zipfls_jax.data import sources  # pylint: disable=g-import-not-at-top
    sources.check_prepared_format("fashion_mnist", builder, file_format)
    return builder.data_path
  data_dir = os.fspath(builder.data_dir_root)
  manual_dir = os.path.join(data_dir, "downloads", "manual")
  if idx_dir is not None and find_idx_files(idx_dir) is None:
    raise FileNotFoundError(
        f"idx_dir={idx_dir!r} does not hold the four Fashion-MNIST IDX files"
        f" {[s for stems in IDX_FILES.values() for s in stems]} (.gz or not)."
    )
  idx_files = _local_idx_files(idx_dir, manual_dir)
  if idx_files is None:
    probe = tfds_mnist.FashionMNIST.URL + IDX_FILES["test"][1] + ".gz"
    if network.can_reach(probe):
      tensorflow_setup.progress_bars_on_terminals_only()
      builder.download_and_prepare(file_format=file_format)
      return builder.data_path
  if idx_files is None:
    raise FileNotFoundError(
        f"Fashion-MNIST is not prepared in {data_dir} and cannot be: no IDX"
        f" files were found and {tfds_mnist.FashionMNIST.URL} is unreachable"
        " (tfds downloads need internet). Do one of:\n"
        f"  * install the Debian/Ubuntu package {DEBIAN_PACKAGE} (as root:"
        f" apt-get update && apt-get install -y {DEBIAN_PACKAGE}), which puts"
        f" the files in {DEBIAN_DIR}; `make demo` offers to do it when run"
        " as root;\n"
        "  * copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,"
        " t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz into"
        f" {manual_dir};\n"
        "  * copy a prepared `fashion_mnist/` folder into"
        f" {data_dir};\n"
        "then run: python -m zipfls_jax.data.prepare --dataset=fashion_mnist"
        f" --data_dir={data_dir}"
    )
  local = _IdxFashionMNIST(idx_files=idx_files, data_dir=data_dir)
  tensorflow_setup.progress_bars_on_terminals_only()
  local.download_and_prepare(file_format=file_format)
  return local.data_path
