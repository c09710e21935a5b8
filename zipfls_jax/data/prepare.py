"""Command line: list the datasets and what each needs, or prepare one.

    python -m zipfls_jax.data.prepare [--data_dir=DIR]
        lists every dataset, whether it is prepared in DIR, and the files to
        place (and where) for each;
    python -m zipfls_jax.data.prepare --dataset=tiny_imagenet --data_dir=DIR
        prepares one (--file_format=array_record for random access).

Wraps `zipfls_jax.data.prepare_dataset` and `how_to_prepare`; only an
entry point. For fashion_mnist, `--manual_dir` may name a folder with the
four IDX files.
"""
import textwrap

from absl import app
from absl import flags
from absl import logging

from zipfls_jax.data import specs

_DATASET = flags.DEFINE_enum(
    "dataset", None, list(specs.DATASET_NAMES),
    "Dataset to prepare; without it, list the datasets and what each needs."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir (default: tfds's).")
_FILE_FORMAT = flags.DEFINE_enum(
    "file_format", None, ["tfrecord", "array_record"],
    "tfds record format (default: tfds's, tfrecord); array_record gives the"
    " random access the class-paired train stream (friends > 0) needs for"
    " imagenet2012 and i_naturalist2021."
)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None, "Folder with manual downloads, or with the IDX files"
    " for fashion_mnist (default: <data_dir>/downloads/manual)."
)


def describe_datasets(data_dir=None) -> str:
  """One paragraph per dataset: classes, prepared or not, what to place."""
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  from zipfls_jax.data import sources  # pylint: disable=g-import-not-at-top
  paragraphs = []
  for name in specs.DATASET_NAMES:
    spec = specs.get_dataset_spec(name)
    builder = data.get_builder(name, data_dir)
    state = f"prepared in {builder.data_path}" if builder.is_prepared() else "not prepared"
    paragraphs.append(f"{name} ({spec.num_classes} classes): {state}.\n" + textwrap.fill(
        sources.how_to_prepare(name, data_dir), width=88, initial_indent="  ",
        subsequent_indent="  ", break_long_words=False, break_on_hyphens=False))
  return ("Datasets (prepare one with --dataset=NAME):\n\n" + "\n\n".join(paragraphs))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _DATASET.value is None:
    # tfds warns about every dataset folder it looks into and finds empty.
    logging.set_verbosity(logging.ERROR)
    print(describe_datasets(_DATA_DIR.value))
    return
  from zipfls_jax import data  # pylint: disable=g-import-not-at-top
  path = data.prepare_dataset(
      _DATASET.value, data_dir=_DATA_DIR.value, manual_dir=_MANUAL_DIR.value,
      file_format=_FILE_FORMAT.value,
  )
  print(f"{_DATASET.value} ready in {path}")


if __name__ == "__main__":
  app.run(main)
