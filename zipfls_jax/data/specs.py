"""What each supported dataset is and how the authors preprocess it.

A `DatasetSpec` is plain metadata (class count, image size, normalisation,
splits, augmentation recipe); it imports neither TensorFlow nor tfds, so
models and configs can ask for `num_classes` or `image_size` cheaply. The
pipelines in `zipfls_jax.data.pipeline` read it; nothing here reads data.

Recipes follow docs/method.md section 6 (the authors' runs):

* cifar100: random crop 32 after 4 zero pixels of padding, horizontal flip;
  eval uses the image as is. CIFAR mean/std.
* tiny_imagenet: random-resized-crop to 32 (torchvision defaults: scale
  0.08-1, ratio 3/4-4/3) and flip; eval is a plain resize 64 -> 32.
  ImageNet mean/std.
* imagenet2012, i_naturalist2021 (the `mini` split for training, `val` for
  evaluation): random-resized-crop 224 and flip; eval resizes the shorter
  side to 256 and takes the centre 224 crop (done as one fused JPEG
  decode-and-crop). ImageNet mean/std.
* fashion_mnist (the small default; not in the paper): 28x28x1, treated
  like CIFAR at its own size: random crop 28 after 4 zero pixels of padding
  and a horizontal flip (clothes stay clothes when mirrored). Mean 0.2860
  and std 0.3530 are those of the 60,000 training images scaled to [0, 1]
  (0.28604 and 0.35302, computed from the official IDX files).
"""
from __future__ import annotations

import dataclasses

# Augmentation and evaluation recipes, by name.
PAD_CROP_FLIP = "pad_crop_flip"
RANDOM_RESIZED_CROP_FLIP = "random_resized_crop_flip"
EVAL_AS_IS = "as_is"
EVAL_RESIZE = "resize"
EVAL_RESIZE_CENTER_CROP = "resize_center_crop"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static description of one dataset and its preprocessing.

  Attributes:
    name: our name for the dataset (also the tfds builder name).
    num_classes: number of labels; labels lie in [0, num_classes).
    image_size: side of the square images the pipelines produce by default.
    channels: channels of the produced images (1 or 3).
    mean: per-channel mean subtracted after scaling pixels to [0, 1].
    std: per-channel standard deviation divided by after the mean.
    train_split: tfds split the training iterator reads.
    eval_split: tfds split the evaluation iterator reads (whole, once).
    train_augmentation: PAD_CROP_FLIP or RANDOM_RESIZED_CROP_FLIP.
    eval_preprocessing: EVAL_AS_IS, EVAL_RESIZE or EVAL_RESIZE_CENTER_CROP.
    padding: zero pixels added on each side before a PAD_CROP_FLIP crop.
    eval_crop_fraction: for EVAL_RESIZE_CENTER_CROP, crop side over resize
      side (224 / 256).
    jpeg: records hold JPEG bytes worth decoding fused with the crop.
    cache: the decoded split fits in host memory and is cached after the
      first pass.
    shuffle_buffer: examples in the per-process shuffle buffer.
  """
  name: str
  num_classes: int
  image_size: int
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_split: str
  eval_split: str
  train_augmentation: str
  eval_preprocessing: str
  padding: int = 0
  eval_crop_fraction: float = 1.0
  jpeg: bool = False
  cache: bool = False
  shuffle_buffer: int = 10_000


_SPECS = {
    "cifar100": DatasetSpec(
        name="cifar100",
        num_classes=100,
        image_size=32,
        channels=3,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        train_split="train",
        eval_split="test",
        train_augmentation=PAD_CROP_FLIP,
        eval_preprocessing=EVAL_AS_IS,
        padding=4,
        cache=True,
        shuffle_buffer=50_000,
    ),
    "tiny_imagenet": DatasetSpec(
        name="tiny_imagenet",
        num_classes=200,
        image_size=32,
        channels=3,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        train_split="train",
        eval_split="validation",
        train_augmentation=RANDOM_RESIZED_CROP_FLIP,
        eval_preprocessing=EVAL_RESIZE,
        cache=True,
        shuffle_buffer=100_000,
    ),
    "imagenet2012": DatasetSpec(
        name="imagenet2012",
        num_classes=1000,
        image_size=224,
        channels=3,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        train_split="train",
        eval_split="validation",
        train_augmentation=RANDOM_RESIZED_CROP_FLIP,
        eval_preprocessing=EVAL_RESIZE_CENTER_CROP,
        eval_crop_fraction=224 / 256,
        jpeg=True,
        shuffle_buffer=16 * 1024,
    ),
    "i_naturalist2021": DatasetSpec(
        name="i_naturalist2021",
        num_classes=10_000,
        image_size=224,
        channels=3,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        train_split="mini",
        eval_split="val",
        train_augmentation=RANDOM_RESIZED_CROP_FLIP,
        eval_preprocessing=EVAL_RESIZE_CENTER_CROP,
        eval_crop_fraction=224 / 256,
        jpeg=True,
        shuffle_buffer=16 * 1024,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        num_classes=10,
        image_size=28,
        channels=1,
        mean=(0.2860,),
        std=(0.3530,),
        train_split="train",
        eval_split="test",
        train_augmentation=PAD_CROP_FLIP,
        eval_preprocessing=EVAL_AS_IS,
        padding=4,
        cache=True,
        shuffle_buffer=60_000,
    ),
}

DATASET_NAMES = tuple(_SPECS)


def get_dataset_spec(name: str) -> DatasetSpec:
  """Returns the `DatasetSpec` of `name` (one of `DATASET_NAMES`)."""
  if not isinstance(name, str):
    raise TypeError(f"name must be a str, got {type(name).__name__}.")
  try:
    return _SPECS[name]
  except KeyError:
    raise ValueError(
        f"Unknown dataset name {name!r}; expected one of {DATASET_NAMES}."
    ) from None
