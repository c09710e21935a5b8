"""Command line: prepare one dataset in a tfds data dir.

    python -m zipfls_jax.data.prepare --dataset=tiny_imagenet --data_dir=DIR

Wraps `zipfls_jax.data.prepare_dataset`; only an entry point. For
fashion_mnist, `--manual_dir` may name a folder with the four IDX files.
"""
from absl import app
from absl import flags

from zipfls_jax.data import specs

_DATASET = flags.DEFINE_enum(
    "dataset", "fashion_mnist", list(specs.DATASET_NAMES), "Dataset name."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder with manual downloads, or with the IDX files"
    " for fashion_mnist (default: <data_dir>/downloads/manual)."
)


def main(argv):
  del argv
  from zipfls_jax.data.sources import prepare_dataset  # pylint: disable=g-import-not-at-top
  path = prepare_dataset(
      _DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value
  )
  print(f"{_DATASET.value} ready in {path}")


if __name__ == "__main__":
  app.run(main)
