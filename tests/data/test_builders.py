"""Our tfds builders prepared offline from small release-format files."""
import io
import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import zipfls_jax.data as data
from zipfls_jax.data import i_naturalist2021


def _jpeg(rng, shape):
  return tf.io.encode_jpeg(
      rng.integers(0, 256, size=shape, dtype=np.uint8)).numpy()


def _write_tiny_imagenet(root, rng):
  """The official tiny-imagenet-200 layout, one train image per class."""
  release = root / "tiny-imagenet-200"
  wnids = [f"n{i:08d}" for i in rng.permutation(200) * 7 + 1000]
  (release / "val" / "images").mkdir(parents=True)
  (release / "wnids.txt").write_text("\n".join(wnids) + "\n")
  for wnid in wnids:
    images = release / "train" / wnid / "images"
    images.mkdir(parents=True)
    (images / f"{wnid}_0.JPEG").write_bytes(_jpeg(rng, (64, 64, 3)))
    (release / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
  val = {f"val_{k}.JPEG": wnids[k * 37] for k in range(5)}
  lines = []
  for k, (file_name, wnid) in enumerate(val.items()):
    # One greyscale JPEG, as in the real release.
    shape = (64, 64, 1) if k == 0 else (64, 64, 3)
    (release / "val" / "images" / file_name).write_bytes(_jpeg(rng, shape))
    lines.append(f"{file_name}\t{wnid}\t0\t0\t63\t63")
  (release / "val" / "val_annotations.txt").write_text("\n".join(lines))
  return wnids, val


def test_tiny_imagenet_from_the_official_folder(tmp_path):
  rng = np.random.default_rng(0)
  manual = tmp_path / "manual"
  wnids, val = _write_tiny_imagenet(manual, rng)
  data_dir = str(tmp_path / "tfds")
  data.prepare_dataset("tiny_imagenet", data_dir=data_dir,
                       manual_dir=str(manual))
  assert data.num_examples("tiny_imagenet", "train", data_dir) == 200
  assert data.num_examples("tiny_imagenet", "eval", data_dir) == 5
  builder = data.get_builder("tiny_imagenet", data_dir)
  names = builder.info.features["label"].names
  assert names == sorted(wnids)  # ImageFolder order.
  examples = tfds.as_numpy(builder.as_dataset(split="validation"))
  got = {ex["file_name"].decode(): int(ex["label"]) for ex in examples}
  assert got == {f: sorted(wnids).index(w) for f, w in val.items()}
  batches = list(data.create_eval_iterator(
      "tiny_imagenet", global_batch_size=8, data_dir=data_dir))
  assert len(batches) == 1 and batches[0]["image"].shape == (8, 32, 32, 3)
  assert sorted(batches[0]["label"][batches[0]["mask"]].tolist()) == sorted(
      got.values())
  train = next(data.create_train_iterator(
      "tiny_imagenet", global_batch_size=16, data_dir=data_dir))
  assert train["image"].shape == (16, 32, 32, 3)
  # Idempotent: preparing again finds the data and changes nothing.
  info = builder.data_path / "dataset_info.json"
  before = info.stat().mtime
  data.prepare_dataset("tiny_imagenet", data_dir=data_dir,
                       manual_dir=str(manual))
  assert info.stat().mtime == before


def _add_to_tar(tar, name, payload):
  member = tarfile.TarInfo(name)
  member.size = len(payload)
  tar.addfile(member, io.BytesIO(payload))


def _write_inat_release(manual, rng):
  """train_mini / val archives in the published iNat21 format."""
  categories = [
      {"id": i, "name": f"{i:05d}_Plantae_Genus species{i}",
       "supercategory": "Plants"}
      for i in range(10_000)
  ]
  labels = {"mini": [5, 9_999, 42], "val": [0, 42]}
  manual.mkdir(parents=True)
  for split, stem in (("mini", "train_mini"), ("val", "val")):
    images, annotations = [], []
    with tarfile.open(manual / f"{stem}.tar.gz", "w:gz") as tar:
      for k, category in enumerate(labels[split]):
        file_name = f"{stem}/{category:05d}_dir/{split}-{k}.jpg"
        _add_to_tar(tar, file_name, _jpeg(rng, (30 + k, 40, 3)))
        images.append({"id": 1000 * len(split) + k, "file_name": file_name})
        annotations.append({"image_id": images[-1]["id"],
                            "category_id": category})
    content = json.dumps({"images": images, "annotations": annotations,
                          "categories": categories}).encode()
    with tarfile.open(manual / f"{stem}.json.tar.gz", "w:gz") as tar:
      _add_to_tar(tar, f"{stem}.json", content)
  return labels


def test_i_naturalist2021_without_the_missing_label_file(tmp_path):
  rng = np.random.default_rng(1)
  manual = tmp_path / "manual"
  labels = _write_inat_release(manual, rng)
  data_dir = str(tmp_path / "tfds")
  data.prepare_dataset("i_naturalist2021", data_dir=data_dir,
                       manual_dir=str(manual))
  # A fresh builder reads names back from the prepared data.
  builder = data.get_builder("i_naturalist2021", data_dir)
  names = builder.info.features["label"].names
  assert len(names) == 10_000
  assert names[42] == "00042_plantae_genus_species42"
  assert set(builder.info.splits) == {"mini", "val"}
  for split in ("mini", "val"):
    got = sorted(int(ex["label"]) for ex in
                 tfds.as_numpy(builder.as_dataset(split=split)))
    assert got == sorted(labels[split])
  batches = list(data.create_eval_iterator(
      "i_naturalist2021", global_batch_size=8, data_dir=data_dir,
      image_size=32))
  assert batches[0]["image"].shape == (8, 32, 32, 3)
  assert int(batches[0]["mask"].sum()) == 2
  train = next(data.create_train_iterator(
      "i_naturalist2021", global_batch_size=8, data_dir=data_dir,
      image_size=32))
  assert set(train["label"].tolist()) <= set(labels["mini"])


def test_i_naturalist2021_label_names_by_hand():
  categories = [{"id": 0, "name": "00000_Animalia A b"},
                {"id": 1, "name": "00001_Plantae C d"}]
  assert i_naturalist2021.label_names(categories) == [
      "00000_animalia_a_b", "00001_plantae_c_d"]
  # tfds looks categories up by list position: other orders are refused.
  with pytest.raises(ValueError, match="listed by id"):
    i_naturalist2021.label_names(categories[::-1])
