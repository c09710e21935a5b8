"""BatchNorm and convolution configured like PyTorch, against hand formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax.models import initializers, layers


def test_batch_norm_follows_pytorch_batchnorm2d_defaults():
  # torch.nn.BatchNorm2d(momentum=0.1, eps=1e-5): train mode normalises with
  # the biased batch variance; running = 0.9 * running + 0.1 * batch.
  x = np.random.default_rng(0).normal(3.0, 0.004, size=(4, 3, 3, 2)).astype(np.float32)
  norm = layers.batch_norm(True, dtype=jnp.float32, axis_name=None)()
  variables = norm.init(jax.random.key(0), x)
  y, updates = norm.apply(variables, x, mutable=["batch_stats"])
  mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
  # The variance (~1.6e-5) is of the order of eps, so a wrong eps shows.
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-3, atol=1e-3)
  stats = updates["batch_stats"]
  np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(stats["var"], 0.9 * 1.0 + 0.1 * var, rtol=1e-5)


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
