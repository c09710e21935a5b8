"""Dataset specs: the authors' constants and names (their imports: tests/test_init.py)."""
import pytest

from zipfls_jax.data import specs


def test_recipes_match_spec_section_6():
  cifar = specs.get_dataset_spec("cifar100")
  assert (cifar.num_classes, cifar.image_size, cifar.padding) == (100, 32, 4)
  assert cifar.mean == (0.4914, 0.4822, 0.4465)
  assert cifar.std == (0.2023, 0.1994, 0.2010)
  assert cifar.train_augmentation == specs.PAD_CROP_FLIP
  tiny = specs.get_dataset_spec("tiny_imagenet")
  assert (tiny.num_classes, tiny.image_size) == (200, 32)
  assert tiny.train_augmentation == specs.RANDOM_RESIZED_CROP_FLIP
  assert tiny.eval_preprocessing == specs.EVAL_RESIZE
  for name, classes, train_split in (("imagenet2012", 1000, "train"),
                                     ("i_naturalist2021", 10_000, "mini")):
    spec = specs.get_dataset_spec(name)
    assert (spec.num_classes, spec.image_size) == (classes, 224)
    assert spec.train_split == train_split
    assert spec.mean == (0.485, 0.456, 0.406)
    assert spec.std == (0.229, 0.224, 0.225)
    assert spec.eval_preprocessing == specs.EVAL_RESIZE_CENTER_CROP
    assert spec.eval_crop_fraction == pytest.approx(224 / 256)
    assert spec.jpeg
  fashion = specs.get_dataset_spec("fashion_mnist")
  assert (fashion.num_classes, fashion.image_size, fashion.channels) == (10, 28, 1)
  assert len(fashion.mean) == len(fashion.std) == 1


def test_every_name_has_a_spec_named_after_it():
  assert set(specs.DATASET_NAMES) == {
      "cifar100", "tiny_imagenet", "imagenet2012", "i_naturalist2021",
      "fashion_mnist"}
  for name in specs.DATASET_NAMES:
    assert specs.get_dataset_spec(name).name == name


def test_unknown_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="imagenet2012") as error:
    specs.get_dataset_spec("imagenet")
  assert "'imagenet'" in str(error.value)
  with pytest.raises(TypeError, match="name must be a str"):
    specs.get_dataset_spec(3)
