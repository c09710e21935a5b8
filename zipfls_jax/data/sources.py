"""Which tfds builder holds each dataset, and how it gets prepared.

`get_builder` returns the builder for one of our dataset names (tfds's own,
or ours where tfds has none or a broken one); `prepare_dataset` makes it
readable (download only after a quick reachability check, manual files
otherwise); `how_to_prepare` and `missing_data_error` say where the data
should be. Nothing
here batches or augments. Importing this module hides GPUs from
TensorFlow, so the input pipelines never take accelerator memory.
"""
from __future__ import annotations

import os

from etils import epath
import tensorflow_datasets as tfds

from zipfls_jax.data import fashion_mnist
from zipfls_jax.data import i_naturalist2021
from zipfls_jax.data import network
from zipfls_jax.data import specs
from zipfls_jax.data import tensorflow_setup
from zipfls_jax.data import tiny_imagenet


_IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
# A file each download needs, probed before anything is downloaded.
_PROBE_URLS = {
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    "tiny_imagenet": tiny_imagenet.URL,
    "i_naturalist2021": f"{i_naturalist2021.URL}/val.json.tar.gz",
}


def get_builder(name: str, data_dir=None) -> tfds.core.DatasetBuilder:
  """The tfds builder that reads dataset `name` from `data_dir`."""
  specs.get_dataset_spec(name)  # Validates the name.
  if name == "tiny_imagenet":
    return tiny_imagenet.TinyImagenet(data_dir=data_dir)
  if name == "i_naturalist2021":
    return i_naturalist2021.INaturalist2021(data_dir=data_dir)
  return tfds.builder(name, data_dir=data_dir)


def default_manual_dir(builder: tfds.core.DatasetBuilder) -> str:
  """tfds's default manual dir for `builder`'s data dir."""
  return os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")


def how_to_prepare(name: str, data_dir=None) -> str:
  """What to place where, and the command that prepares dataset `name`."""
  builder = get_builder(name, data_dir)
  root = os.fspath(builder.data_dir_root)
  manual = default_manual_dir(builder)
  prepare = (
      f"python -m zipfls_jax.data.prepare --dataset={name} --data_dir={root}"
  )
  if name == "fashion_mnist":
    return (
        f"Run `{prepare}`. With internet it downloads from tfds; offline it"
        " reads the four IDX files (train-images-idx3-ubyte.gz,"
        " train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,"
        f" t10k-labels-idx1-ubyte.gz) from {manual} or from"
        f" {fashion_mnist.DEBIAN_DIR}, where the Debian/Ubuntu package"
        f" {fashion_mnist.DEBIAN_PACKAGE} puts them."
    )
  if name == "cifar100":
    return (
        f"Run `{prepare}` on a machine with internet (tfds downloads about"
        f" 160 MB from {_PROBE_URLS[name]}), or copy a prepared `cifar100/`"
        f" folder into {root}."
    )
  if name == "tiny_imagenet":
    return (
        f"Put the official `{tiny_imagenet.FOLDER}/` folder (wnids.txt,"
        " train/<wnid>/images/*.JPEG, val/images/*.JPEG,"
        f" val/val_annotations.txt) or `{tiny_imagenet.ZIP_NAME}` in"
        f" {manual}, then run `{prepare}`; without them it downloads"
        f" {tiny_imagenet.URL}, which needs internet."
    )
  if name == "imagenet2012":
    return (
        f"Download {' and '.join(_IMAGENET_MANUAL_FILES)} from"
        f" https://image-net.org (registration needed), put both in"
        f" {manual}, then run `{prepare}` (no internet needed)."
    )
  archives = [f for s in ("mini", "val") for f in i_naturalist2021.manual_files(s)]
  return (
      f"Put {', '.join(archives)} (from {i_naturalist2021.URL}) in"
      f" {manual}, then run `{prepare}`; missing archives are downloaded,"
      " which needs internet."
  )


def missing_data_error(name: str, data_dir=None) -> FileNotFoundError:
  """The error for a dataset that is not prepared: where to put what."""
  builder = get_builder(name, data_dir)
  return FileNotFoundError(
      f"Dataset {name!r} is not prepared in {os.fspath(builder.data_dir_root)} (looked for"
      f" {os.fspath(builder.data_path)}). {how_to_prepare(name, data_dir)}"
  )


def _has_manual_files(name: str, manual_dir: str) -> bool:
  manual = epath.Path(manual_dir)
  if name == "tiny_imagenet":
    return tiny_imagenet.find_release(manual) is not None
  if name == "imagenet2012":
    return all((manual / f).exists() for f in _IMAGENET_MANUAL_FILES)
  if name == "i_naturalist2021":
    return all(
        (manual / f).exists()
        for split in ("mini", "val")
        for f in i_naturalist2021.manual_files(split)
    )
  return False


def check_prepared_format(name: str, builder, file_format) -> None:
  """Refuses a prepared copy that lacks the `file_format` asked for (None: any)."""
  if file_format is None:
    return
  wanted = tfds.core.FileFormat.from_value(file_format)
  if wanted not in builder.info.available_file_formats():
    raise ValueError(
        f"file_format={wanted.value!r}: dataset {name!r} is already prepared in"
        f" {os.fspath(builder.data_path)} as"
        f" {sorted(f.value for f in builder.info.available_file_formats())}."
        " Prepare it in another data_dir, or add that format to this copy"
        " with tfds's `tfds convert_format"
        f" --dataset_version_dir={os.fspath(builder.data_path)}"
        f" --out_file_format={wanted.value}`."
    )


def prepare_dataset(name: str, *, data_dir=None, manual_dir=None,
                    file_format=None) -> epath.Path:
  """Prepares dataset `name` in `data_dir` (idempotent) and returns its path.

  Reads manual files when they are in `manual_dir` (default
  `<data_dir>/downloads/manual`); downloads only when the source answers
  within seconds. Otherwise raises the `missing_data_error`. `file_format`
  is tfds's record format (None: tfds's default, tfrecord); 'array_record'
  gives random access by index, which the class-paired train stream
  (`friends` > 0) needs for datasets not held in memory (ImageNet,
  iNaturalist). A copy already prepared in another format is refused.
  """
  if name == "fashion_mnist":
    return fashion_mnist.prepare_fashion_mnist(
        data_dir, idx_dir=manual_dir, file_format=file_format)
  builder = get_builder(name, data_dir)
  if builder.is_prepared():
    check_prepared_format(name, builder, file_format)
    return builder.data_path
  manual_dir = manual_dir or default_manual_dir(builder)
  if not _has_manual_files(name, manual_dir) and (
      name == "imagenet2012" or not network.can_reach(_PROBE_URLS[name])
  ):
    raise missing_data_error(name, data_dir)
  tensorflow_setup.progress_bars_on_terminals_only()
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir),
      file_format=file_format,
  )
  return builder.data_path
