"""Input pipeline throughput next to the train step it has to feed.

Issue 4: the train pipeline must not be the bottleneck. This writes two
small datasets locally with tfds under their real names (so the very same
reader and preprocessing run): CIFAR-100-format 32x32 PNG records and
ImageNet-format JPEGs of natural-photo size (smooth random images with
ImageNet's typical pixel count), then prints

* images/s of `zipfls_jax.data.train_dataset` (steady state: after the
  first pass for cached CIFAR, after a warm-up for ImageNet), and
* images/s of a jitted train step of the matching model (cifar_resnet18 at
  32x32, resnet50 at 224x224: forward, backward, Zipf's LS loss, SGD with
  momentum) on this machine's JAX devices,

and their ratio; a ratio below 1 means the pipeline would starve the step.
Both run on the same host, one after the other (in training they share
the CPU; on an accelerator host the step runs on the accelerator).

  python -m benchmarks.input_pipeline [--jpeg_examples 768] [--step_batch_224 16]
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import imagenet2012_dataset_builder as tfds_imagenet
from tensorflow_datasets.image_classification import cifar as tfds_cifar

from zipfls_jax import zipf_label_smoothing_loss
from zipfls_jax import data
from zipfls_jax.models import get_model


class _SyntheticCifar100(tfds_cifar.Cifar100, skip_registration=True):
  """tfds's CIFAR-100 builder fed random images instead of the download."""
  name = "cifar100"
  num_train = 10_000

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(self.num_train, seed=0),
            "test": self._generate_examples(1_000, seed=1)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    rng = np.random.default_rng(seed)
    for i in range(n):
      yield i, {"id": f"{i}", "label": i % 100, "coarse_label": i % 20,
                "image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}


def _photo_like(rng, height, width):
  """Smooth random image: JPEG size and decode cost close to a photo's."""
  small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3))
  image = np.kron(small, np.ones((16, 16, 1)))[:height, :width]
  image = image + rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


class _SyntheticImagenet(tfds_imagenet.Builder, skip_registration=True):
  """tfds's ImageNet builder fed JPEGs of ImageNet's typical size."""
  name = "imagenet2012"
  num_train = 768

  @classmethod
  def get_metadata(cls):
    # Metadata files live next to tfds's builder, not next to this script.
    return tfds_imagenet.Builder.get_metadata()

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(self.num_train, seed=0),
            "validation": self._generate_examples(64, seed=1)}

  def _generate_examples(self, n, seed):  # pylint: disable=arguments-differ
    from PIL import Image  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(seed)
    for i in range(n):
      # ImageNet train images average about 400x350 pixels (110 kB); these
      # come out at about 63 kB, so decoding is if anything a bit cheaper.
      height, width = rng.integers(300, 500), rng.integers(350, 500)
      buffer = io.BytesIO()
      Image.fromarray(_photo_like(rng, height, width)).save(
          buffer, format="JPEG", quality=90)
      yield f"{i}.JPEG", {"image": buffer.getvalue(), "label": i % 1000,
                          "file_name": f"{i}.JPEG"}


def pipeline_images_per_s(name, data_dir, batch, warmup, measured):
  ds = data.train_dataset(name, global_batch_size=batch, seed=0,
                          data_dir=data_dir)
  it = iter(tfds.as_numpy(ds))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(measured):
    next(it)
  return batch * measured / (time.perf_counter() - start)


def step_images_per_s(model_name, num_classes, size, batch, reps):
  model = get_model(model_name, num_classes=num_classes)
  images = jax.random.normal(jax.random.key(0), (batch, size, size, 3))
  labels = jax.random.randint(jax.random.key(1), (batch,), 0, num_classes)
  variables = jax.jit(lambda x: model.init(jax.random.key(2), x,
                                           train=False))(images)
  tx = optax.sgd(0.1, momentum=0.9)
  state = (variables["params"], variables["batch_stats"],
           tx.init(variables["params"]))

  @jax.jit
  def step(state, images, labels):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      out, updates = model.apply(
          {"params": params, "batch_stats": batch_stats}, images, train=True,
          votes=True, mutable=["batch_stats"])
      loss = zipf_label_smoothing_loss(out.logits, labels, votes=out.votes)
      return jnp.mean(loss), updates["batch_stats"]

    grads, new_stats = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state

  state = jax.block_until_ready(step(state, images, labels))  # compile
  state = jax.block_until_ready(step(state, images, labels))  # warm-up
  start = time.perf_counter()
  for _ in range(reps):
    state = step(state, images, labels)
  jax.block_until_ready(state)
  return batch * reps / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None,
                      help="where to write the data (default: a temp dir)")
  parser.add_argument("--cifar_examples", type=int, default=10_000)
  parser.add_argument("--jpeg_examples", type=int, default=768)
  parser.add_argument("--batch_32", type=int, default=128)
  parser.add_argument("--batch_224", type=int, default=128)
  parser.add_argument("--step_batch_32", type=int, default=128)
  parser.add_argument("--step_batch_224", type=int, default=16)
  parser.add_argument("--step_reps", type=int, default=3)
  args = parser.parse_args()

  data_dir = args.data_dir or tempfile.mkdtemp(prefix="input_pipeline_")
  _SyntheticCifar100.num_train = args.cifar_examples
  _SyntheticImagenet.num_train = args.jpeg_examples
  for builder_cls in (_SyntheticCifar100, _SyntheticImagenet):
    builder = builder_cls(data_dir=data_dir)
    if not builder.is_prepared():
      start = time.perf_counter()
      builder.download_and_prepare()
      print(f"wrote {builder.name} in {time.perf_counter() - start:.0f}s",
            flush=True)

  per_pass = args.cifar_examples // args.batch_32
  rows = [
      ("cifar100 32x32", "cifar_resnet18", 100, 32,
       pipeline_images_per_s("cifar100", data_dir, args.batch_32,
                             warmup=per_pass + 2, measured=2 * per_pass),
       args.step_batch_32),
      ("imagenet2012 224x224 JPEG", "resnet50", 1000, 224,
       pipeline_images_per_s("imagenet2012", data_dir, args.batch_224,
                             warmup=2, measured=max(
                                 2, args.jpeg_examples // args.batch_224)),
       args.step_batch_224),
  ]
  print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs,"
        f" jax {jax.__version__}, devices {jax.devices()}")
  for label, model_name, classes, size, pipe, step_batch in rows:
    step = step_images_per_s(model_name, classes, size, step_batch,
                             args.step_reps)
    print(f"{label}: pipeline {pipe:,.0f} img/s, {model_name} train step"
          f" (batch {step_batch}) {step:,.1f} img/s, pipeline/step"
          f" {pipe / step:,.1f}x", flush=True)


if __name__ == "__main__":
  main()
