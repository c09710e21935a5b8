"""A tfds builder for Tiny ImageNet (200 classes, 64x64 JPEGs).

tfds has no Tiny ImageNet builder, so this one reads the official
`tiny-imagenet-200` release (http://cs231n.stanford.edu/tiny-imagenet-200.zip)
into tfds records named `tiny_imagenet`, which the pipelines then read like
any other tfds dataset. It only prepares data; it never augments.

Expected layout, in the manual dir (default `<data_dir>/downloads/manual/`),
either the zip `tiny-imagenet-200.zip` or the extracted folder:

    tiny-imagenet-200/
      wnids.txt                      200 WordNet ids, one per line
      train/<wnid>/images/<wnid>_<k>.JPEG    500 images per class
      val/images/val_<k>.JPEG        10,000 images
      val/val_annotations.txt        "<file>\t<wnid>\t<x0>\t<y0>\t<x1>\t<y1>"

(`words.txt`, `train/<wnid>/<wnid>_boxes.txt` and the unlabelled `test/`
folder are ignored.) With neither present, preparing downloads the zip.

Labels are the index of the wnid in sorted order, the order torchvision's
`ImageFolder` gives the authors' class folders. Splits: `train` (100,000)
and `validation` (10,000, labelled from `val_annotations.txt`). A few
images are greyscale JPEGs; the stored bytes are the originals and decoding
asks for 3 channels.
"""
from __future__ import annotations

import os

from etils import epath
import tensorflow_datasets as tfds

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
FOLDER = "tiny-imagenet-200"
ZIP_NAME = "tiny-imagenet-200.zip"
NUM_CLASSES = 200


def find_release(manual_dir) -> epath.Path | None:
  """The `tiny-imagenet-200` folder or zip under `manual_dir`, if any."""
  if manual_dir is None:
    return None
  manual_dir = epath.Path(manual_dir)
  for candidate in (manual_dir / FOLDER, manual_dir):
    if (candidate / "wnids.txt").exists():
      return candidate
  if (manual_dir / ZIP_NAME).exists():
    return manual_dir / ZIP_NAME
  return None


class TinyImagenet(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Tiny ImageNet 200 from the official release folder."""

  # Not registered with tfds (a later tfds or a community builder may claim
  # the name); instantiate this class directly.
  name = "tiny_imagenet"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Train and validation splits of tiny-imagenet-200."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Tiny ImageNet: 200 ImageNet classes at 64x64.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(
                shape=(64, 64, 3), encoding_format="jpeg"
            ),
            # Names (the wnids) are only known from the release's wnids.txt;
            # they are set in `_split_generators` and saved with the data.
            "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="http://cs231n.stanford.edu/",
    )

  def _split_generators(self, dl_manager):
    try:
      release = find_release(dl_manager.manual_dir)
    except AssertionError:  # tfds: manual dir missing or empty.
      release = None
    if release is None:
      release = epath.Path(dl_manager.download_and_extract(URL))
    elif release.name == ZIP_NAME:
      release = epath.Path(dl_manager.extract(release))
    if not (release / "wnids.txt").exists():
      release = release / FOLDER
    wnids = sorted(
        line.strip()
        for line in (release / "wnids.txt").read_text().splitlines()
        if line.strip()
    )
    if len(wnids) != NUM_CLASSES:
      raise ValueError(
          f"{release / 'wnids.txt'} lists {len(wnids)} classes; Tiny ImageNet"
          f" has {NUM_CLASSES}."
      )
    self.info.features["label"].names = wnids
    return {
        "train": self._generate_examples(_train_files(release / "train", wnids)),
        "validation": self._generate_examples(_validation_files(release / "val")),
    }

  def _generate_examples(self, files):
    """Yields the examples of (image path, wnid) pairs, keyed by file name."""
    for path, wnid in files:
      yield path.name, {
          "image": os.fspath(path),
          "label": wnid,
          "file_name": path.name,
      }


def _train_files(train_dir: epath.Path, wnids):
  for wnid in wnids:
    image_dir = train_dir / wnid / "images"
    if not image_dir.exists():
      raise FileNotFoundError(f"Missing training folder {image_dir}.")
    for path in sorted(image_dir.iterdir()):
      if path.suffix.lower() in (".jpeg", ".jpg"):
        yield path, wnid


def _validation_files(val_dir: epath.Path):
  annotations = val_dir / "val_annotations.txt"
  if not annotations.exists():
    raise FileNotFoundError(f"Missing validation labels {annotations}.")
  for line in annotations.read_text().splitlines():
    if line.strip():
      file_name, wnid = line.split("\t")[:2]
      yield val_dir / "images" / file_name, wnid
