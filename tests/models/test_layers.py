"""BatchNorm and convolution configured like PyTorch, against hand formulas.

BatchNorm is checked with and without cross-device synchronisation on the 8
fake CPU devices of tests/conftest.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from zipfls_jax.models import initializers, layers


def test_batch_norm_follows_pytorch_batchnorm2d():
  # torch.nn.BatchNorm2d(momentum=0.1, eps=1e-5) in train mode normalises with
  # the batch mean and the biased batch variance, and updates
  #   running_mean = 0.9 * running_mean + 0.1 * mean
  #   running_var  = 0.9 * running_var  + 0.1 * var * n / (n - 1)
  # with n the values per channel (the unbiased variance; torch's docs, and
  # checked once against torch 2.13). Flax's own BatchNorm uses the biased one.
  x = np.random.default_rng(0).normal(3.0, 0.004, size=(4, 3, 3, 2)).astype(np.float32)
  n = 4 * 3 * 3
  norm = layers.batch_norm(True, dtype=jnp.float32, axis_name=None)()
  variables = norm.init(jax.random.key(0), x)
  np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)   # torch's initial values
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)
  y, updates = jax.jit(lambda v, x: norm.apply(v, x, mutable=["batch_stats"]))(variables, x)
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  # The variance (~1.6e-5) is of the order of eps, so a wrong eps shows.
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-3, atol=1e-3)
  stats = updates["batch_stats"]
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
  # Running variance starting at 0 isolates the new term: 0.1 * var * n / (n - 1).
  zero = {"params": variables["params"], "batch_stats": {"mean": jnp.zeros(2), "var": jnp.zeros(2)}}
  _, updates = norm.apply(zero, x, mutable=["batch_stats"])
  np.testing.assert_allclose(updates["batch_stats"]["var"], 0.1 * var * n / (n - 1), rtol=1e-4)
  assert not np.allclose(updates["batch_stats"]["var"], 0.1 * var, rtol=1e-3)  # Flax's rule
  # Eval mode normalises with the running statistics and changes nothing.
  y_eval = norm.clone(use_running_average=True).apply(
      {"params": variables["params"], **updates}, x)
  stats = updates["batch_stats"]
  np.testing.assert_allclose(
      y_eval, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), rtol=1e-5, atol=1e-5)


def shard_map_bn(mesh, axis_name):
  """One train-mode BatchNorm per device; returns outputs and each device's running stats."""
  norm = layers.batch_norm(True, dtype=jnp.float32, axis_name=axis_name)()

  def per_device(variables, x):
    y, updates = norm.apply(variables, x, mutable=["batch_stats"])
    return y, jax.tree.map(lambda s: s[None], updates["batch_stats"])

  return norm, jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("d")),
                                     out_specs=(P("d"), P("d"))))


@pytest.fixture(scope="module")
def sharded_case():
  mesh = jax.make_mesh((8,), ("d",))
  x = np.random.default_rng(1).normal(size=(16, 3, 3, 2)).astype(np.float32)
  x *= np.arange(1, 17, dtype=np.float32)[:, None, None, None]   # devices see unlike shards
  zero = {"params": {"scale": jnp.ones(2), "bias": jnp.zeros(2)},
          "batch_stats": {"mean": jnp.zeros(2), "var": jnp.zeros(2)}}
  return mesh, x, jax.device_put(x, NamedSharding(mesh, P("d"))), zero


def test_synchronised_batch_norm_counts_the_global_batch(sharded_case):
  mesh, x, x_sharded, zero = sharded_case
  _, step = shard_map_bn(mesh, "d")
  y, stats = jax.device_get(step(zero, x_sharded))
  mean, var, n = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2)), 16 * 3 * 3
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
  for device in range(8):   # every device holds the same, global, statistics
    np.testing.assert_allclose(stats["mean"][device], 0.1 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(stats["var"][device], 0.1 * var * n / (n - 1), rtol=1e-4)
  # The same as one global program under plain jit (how the default training step runs).
  norm = layers.batch_norm(True, dtype=jnp.float32, axis_name=None)()
  _, full = jax.jit(lambda v, x: norm.apply(v, x, mutable=["batch_stats"]))(zero, x_sharded)
  np.testing.assert_allclose(full["batch_stats"]["var"], stats["var"][0], rtol=1e-5)


def test_per_device_batch_norm_counts_the_device_shard(sharded_case):
  mesh, x, x_sharded, zero = sharded_case
  _, step = shard_map_bn(mesh, None)
  y, stats = jax.device_get(step(zero, x_sharded))
  n = 2 * 3 * 3   # each device's 2 images
  for device in range(8):
    shard = x[2 * device:2 * device + 2]
    mean, var = shard.mean(axis=(0, 1, 2)), shard.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y[2 * device:2 * device + 2], (shard - mean) / np.sqrt(var + 1e-5),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["var"][device], 0.1 * var * n / (n - 1), rtol=1e-4)


def test_batch_norm_refuses_one_value_per_channel_in_training():
  norm = layers.batch_norm(True, dtype=jnp.float32, axis_name=None)()
  x = jnp.ones((1, 1, 1, 3))
  variables = norm.init(jax.random.key(0), x)   # init never updates: allowed
  with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 1, 1, 3\)"):
    norm.apply(variables, x, mutable=["batch_stats"])


@pytest.mark.parametrize("strides", [1, 2])
def test_conv_pads_like_pytorch(strides):
  # PyTorch Conv2d(k=3, stride=s, padding=1): out[i] = sum_k x[s*i - 1 + k] w[k].
  x = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 6, 1)
  conv = layers.conv(1, 3, strides=strides, dtype=jnp.float32,
                     kernel_init=initializers.torch_default_kernel)
  kernel = np.zeros((3, 3, 1, 1), np.float32)
  kernel[1, :, 0, 0] = [1.0, 10.0, 100.0]  # only the centre row sees the 1-row input
  y = conv.apply({"params": {"kernel": kernel}}, x)[0, 0, :, 0]
  padded = np.pad(x[0, 0, :, 0], 1)
  expected = [padded[i:i + 3] @ [1.0, 10.0, 100.0] for i in range(0, 6, strides)]
  np.testing.assert_allclose(y, expected)
