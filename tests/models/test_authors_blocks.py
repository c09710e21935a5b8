"""One block of each CIFAR model against a NumPy reference of the authors' block.

The references (tests/models/numpy_reference.py) are written from the
authors' PyTorch definitions in PyTorch's layout (NCHW, OIHW kernels) and
read parameters by their PyTorch names; here our Flax parameters are put
under those names by hand (kernel HWIO -> OIHW, BN scale -> weight). Random
BN parameters and running statistics make every term of the formula count.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import numpy_reference as ref
from zipfls_jax.models import initializers, layers
from zipfls_jax.models.cifar_resnet import PreActBlock
from zipfls_jax.models.densenet import DenseLayer


def build(block_cls, train, **kwargs):
  conv = functools.partial(layers.conv, dtype=jnp.float32,
                           kernel_init=initializers.torch_default_kernel)
  norm = layers.batch_norm(train, dtype=jnp.float32, axis_name=None)
  return block_cls(conv=conv, norm=norm, **kwargs)


def randomise(variables, seed):
  """Random kernels, BN scales/biases and running statistics (variances > 0)."""
  leaves, treedef = jax.tree.flatten_with_path(variables)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    name = path[-1].key
    if name == "var":
      out.append(rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32))
    elif name == "kernel":
      out.append(rng.normal(0.0, 0.3, leaf.shape).astype(np.float32))
    else:
      out.append(rng.normal(0.0, 1.0, leaf.shape).astype(np.float32) + (name == "scale"))
  return jax.tree.unflatten(treedef, out)


def torch_names(variables):
  """Our variables under PyTorch's names and layouts (stated here, not imported)."""
  p = {}
  for module, leaves in variables["params"].items():
    if "kernel" in leaves:
      p[f"{module}.weight"] = np.transpose(leaves["kernel"], (3, 2, 0, 1))
    else:
      p[f"{module}.weight"], p[f"{module}.bias"] = leaves["scale"], leaves["bias"]
  for module, stats in variables.get("batch_stats", {}).items():
    p[f"{module}.running_mean"], p[f"{module}.running_var"] = stats["mean"], stats["var"]
  # Our projection is one conv named 'shortcut'; theirs is `shortcut = Sequential(conv)`.
  if "shortcut.weight" in p:
    p["shortcut.0.weight"] = p.pop("shortcut.weight")
  return p


def nchw(x):
  return np.transpose(np.asarray(x, np.float64), (0, 3, 1, 2))


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("in_features, features, strides", [
    (16, 16, 1),   # identity shortcut: adds o = ReLU(BN1(x)), not x
    (8, 16, 2),    # projection shortcut: 1x1 strided conv of o
], ids=["identity", "projection"])
def test_preact_block_is_the_authors_block(in_features, features, strides, train):
  x = jax.random.normal(jax.random.key(0), (3, 6, 6, in_features)) * 2.0 + 0.5
  block = build(PreActBlock, train, features=features, strides=strides)
  variables = randomise(build(PreActBlock, False, features=features, strides=strides)
                        .init(jax.random.key(1), x), seed=2)
  assert ("shortcut" in variables["params"]) == (strides != 1)
  y = block.apply(variables, x, mutable=["batch_stats"])[0] if train else block.apply(variables, x)
  want = ref.preact_block(nchw(x), torch_names(variables), stride=strides, train=train)
  np.testing.assert_allclose(nchw(y), want, rtol=1e-4, atol=1e-4)
  if strides == 1:
    # Teeth: the textbook block (adding x) is a different function here.
    o = ref.relu(ref.batch_norm(nchw(x), torch_names(variables), "bn1.", train=train)[0])
    assert not np.allclose(nchw(y), want - o + nchw(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_cifar_dense_layer_puts_its_new_channels_first(train):
  x = jax.random.normal(jax.random.key(3), (2, 5, 5, 12)) + 1.0
  kwargs = dict(growth_rate=4, bn_size=4, new_first=True)
  block = build(DenseLayer, train, **kwargs)
  variables = randomise(build(DenseLayer, False, **kwargs).init(jax.random.key(4), x), seed=5)
  y = block.apply(variables, x, mutable=["batch_stats"])[0] if train else block.apply(variables, x)
  assert y.shape == (2, 5, 5, 16)
  want = ref.dense_layer(nchw(x), torch_names(variables), train=train)
  np.testing.assert_allclose(nchw(y), want, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(y[..., 4:], x)


def test_torchvision_dense_layer_appends_its_new_channels():
  x = jax.random.normal(jax.random.key(6), (2, 5, 5, 12))
  block = build(DenseLayer, False, growth_rate=4, bn_size=4, new_first=False)
  variables = block.init(jax.random.key(7), x)
  y = block.apply(variables, x)
  np.testing.assert_array_equal(y[..., :12], x)
  first = build(DenseLayer, False, growth_rate=4, bn_size=4, new_first=True).apply(variables, x)
  np.testing.assert_array_equal(first[..., :4], y[..., 12:])
