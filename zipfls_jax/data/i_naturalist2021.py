"""tfds's `i_naturalist2021` builder, made usable with the published wheels.

tfds 4.9.x's builder builds its label feature from
`image_classification/i_naturalist2021/i_naturalist2021_labels_ordered_by_json_id.txt`,
a file the published wheels do not ship: even reading an already prepared
copy, or mocking it in tests, fails in `_info()`. This subclass keeps the
builder's name, version, features and record format (so it reads copies
prepared by tfds itself and writes copies tfds reads), and:

* without the label file, declares the label as 10,000 classes; the names
  are then restored from the prepared data's `label.labels.txt`, or, when
  preparing, taken from the dataset's own JSON `categories` list (in id
  order) and formatted the way the builder formats them (that list *is*
  what the missing file holds, "ordered by json id");
* prepares only the two splits the recipe reads, `mini` (500,000 images)
  and `val` (100,000), rather than downloading the 2.7M-image `train` and
  the unlabelled `public_test`;
* reads the release archives from the manual dir when they are there
  (`train_mini.tar.gz`, `train_mini.json.tar.gz`, `val.tar.gz`,
  `val.json.tar.gz`, as published at
  https://ml-inat-competition-datasets.s3.amazonaws.com/2021/), downloading
  only what is missing.

It never augments or batches; the pipelines do that.
"""
from __future__ import annotations

import json
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification.i_naturalist2021 import i_naturalist2021 as tfds_inat

NUM_CLASSES = 10_000
URL = "https://ml-inat-competition-datasets.s3.amazonaws.com/2021"
SPLIT_FILES = {"mini": "train_mini", "val": "val"}
_LABELS_FILE = os.path.join(
    "image_classification",
    "i_naturalist2021",
    "i_naturalist2021_labels_ordered_by_json_id.txt",
)


def manual_files(split: str) -> tuple[str, str]:
  """The image and JSON archive names of `split` in the manual dir."""
  stem = SPLIT_FILES[split]
  return f"{stem}.tar.gz", f"{stem}.json.tar.gz"


def label_names(categories) -> list[str]:
  """Class names from a JSON `categories` list, in the builder's order.

  The published JSON lists categories by id, 0 to 9,999; tfds's example
  generator relies on it (it looks a category up by list position), so any
  other order is refused rather than silently mislabelled.
  """
  if [c["id"] for c in categories] != list(range(len(categories))):
    raise ValueError(
        "iNat21 JSON categories must be listed by id, 0, 1, ..., n-1."
    )
  return [c["name"].lower().replace(" ", "_") for c in categories]


class INaturalist2021(tfds_inat.INaturalist2021, skip_registration=True):
  """iNaturalist 2021 (`mini` and `val`) with labels from the JSON files."""

  name = "i_naturalist2021"
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    if tfds.core.tfds_path(_LABELS_FILE).exists():
      return super()._info()
    return tfds.core.DatasetInfo(
        builder=self,
        description=getattr(tfds_inat, "_DESCRIPTION", "iNaturalist 2021."),
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Scalar(dtype=np.int64),
            "file_id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "supercategory": tfds.features.ClassLabel(
                names_file=tfds.core.tfds_path(
                    os.path.join(
                        "image_classification",
                        "i_naturalist2021",
                        "i_naturalist2021_supercategories.txt",
                    )
                )
            ),
        }),
        supervised_keys=("image", "label"),
        homepage=getattr(tfds_inat, "_HOMEPAGE", None),
        citation=getattr(tfds_inat, "_CITATION", None),
    )

  def _split_generators(self, dl_manager):
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # tfds: manual dir missing or empty.
      manual_dir = None
    generators = {}
    names = None
    for split, stem in SPLIT_FILES.items():
      images_name, json_name = manual_files(split)
      if manual_dir is not None and (manual_dir / images_name).exists():
        images = manual_dir / images_name
      else:
        images = dl_manager.download(
            tfds.download.Resource(
                url=f"{URL}/{images_name}",
                extract_method=tfds.download.ExtractMethod.NO_EXTRACT,
            )
        )
      if manual_dir is not None and (manual_dir / json_name).exists():
        json_dir = dl_manager.extract(manual_dir / json_name)
      else:
        json_dir = dl_manager.download_and_extract(f"{URL}/{json_name}")
      json_file = epath.Path(json_dir) / f"{stem}.json"
      split_names = label_names(json.loads(json_file.read_text())["categories"])
      if names is not None and split_names != names:
        raise ValueError(f"{json_file} lists other categories than mini.")
      names = split_names
      generators[split] = self._generate_examples(
          images_archive=dl_manager.iter_archive(images),
          json_file=os.fspath(json_file),
      )
    # Raises if the wheel's label file disagrees with the JSON.
    self.info.features["label"].names = names
    return generators
