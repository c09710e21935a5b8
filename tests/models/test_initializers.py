"""Initial weights follow the PyTorch references (checked by their statistics)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax.models import get_model, initializers, layers, resnet


def init_params(name, side, **kwargs):
  model = get_model(name, num_classes=10, **kwargs)
  images = jnp.zeros((1, side, side, 3))
  return jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(images)["params"]


@pytest.fixture(scope="module")
def resnet_params():
  return init_params("resnet_tiny", 64, zero_init_residual=True)


@pytest.fixture(scope="module")
def cifar_params():
  return init_params("cifar_resnet_tiny", 32, zero_init_residual=True)


def test_imagenet_resnet_convs_are_kaiming_normal_fan_out(resnet_params):
  # torchvision: std = sqrt(2 / (k * k * out_channels)), untruncated normal.
  kernel = np.asarray(resnet_params["stage4_block1"]["conv2"]["kernel"])  # 3x3, 64 -> 64
  assert kernel.shape == (3, 3, 64, 64)
  np.testing.assert_allclose(kernel.std(), math.sqrt(2.0 / (9 * 64)), rtol=0.05)
  assert np.abs(kernel).max() > 3.0 * math.sqrt(2.0 / (9 * 64))  # not truncated at 2 std


def test_cifar_convs_and_heads_are_pytorch_defaults(cifar_params):
  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
  kernel = np.asarray(cifar_params["stage4_block1"]["conv1"]["kernel"])  # 3x3, 32 -> 64
  assert kernel.shape == (3, 3, 32, 64)
  bound = 1.0 / math.sqrt(9 * 32)
  assert np.abs(kernel).max() <= bound
  np.testing.assert_allclose(kernel.std(), bound / math.sqrt(3.0), rtol=0.05)
  bias = np.asarray(cifar_params["head"]["bias"])
  assert np.abs(bias).max() <= 1.0 / math.sqrt(64) and np.abs(bias).max() > 0


def test_zero_init_residual_zeroes_each_basic_branch_last_bn_only(resnet_params):
  blocks = [k for k in resnet_params if k.startswith("stage")]
  assert len(blocks) == 4
  for block in blocks:
    np.testing.assert_array_equal(resnet_params[block]["bn2"]["scale"], 0.0)
    np.testing.assert_array_equal(resnet_params[block]["bn1"]["scale"], 1.0)


def test_zero_init_residual_preact_branches_start_at_zero_and_still_learn(cifar_params):
  # A pre-activation branch ends in conv2: its kernel is zeroed, not bn2's
  # scale, which feeds a ReLU whose gradient at 0 would keep the branch dead.
  blocks = [k for k in cifar_params if k.startswith("stage")]
  assert len(blocks) == 4
  for block in blocks:
    np.testing.assert_array_equal(cifar_params[block]["conv2"]["kernel"], 0.0)
    np.testing.assert_array_equal(cifar_params[block]["bn2"]["scale"], 1.0)
  model = get_model("cifar_resnet_tiny", num_classes=10, zero_init_residual=True)
  images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

  def loss(params):
    # Train mode normalises with batch statistics: no running ones needed.
    out, _ = model.apply({"params": params}, images, train=True, mutable=["batch_stats"])
    return jnp.sum(out.logits ** 2)

  grads = jax.jit(jax.grad(loss))(cifar_params)
  for block in blocks:
    assert np.abs(np.asarray(grads[block]["conv2"]["kernel"])).max() > 0, block


def test_bottleneck_zero_init_is_its_bn3_and_off_by_default():
  # One grouped, strided bottleneck block (as in resnext_tiny), initialised
  # eagerly: compiling a whole model would cost more than the check.
  x = jnp.zeros((1, 4, 4, 16))

  def block_params(zero_init_residual):
    block = resnet.Bottleneck(
        8, strides=2, groups=4, width_per_group=32, zero_init_residual=zero_init_residual,
        conv=functools.partial(layers.conv, dtype=jnp.float32,
                               kernel_init=initializers.kaiming_normal_fan_out),
        norm=layers.batch_norm(False, dtype=jnp.float32, axis_name=None))
    return block.init(jax.random.key(0), x)["params"]

  zeroed, default = block_params(True), block_params(False)
  np.testing.assert_array_equal(zeroed["bn3"]["scale"], 0.0)
  np.testing.assert_array_equal(zeroed["bn2"]["scale"], 1.0)
  np.testing.assert_array_equal(zeroed["downsample_bn"]["scale"], 1.0)
  np.testing.assert_array_equal(default["bn3"]["scale"], 1.0)


def test_mobilenet_head_is_normal_001_with_zero_bias():
  params = init_params("mobilenet_v2_tiny", 32)
  kernel = np.asarray(params["head"]["kernel"])
  np.testing.assert_allclose(kernel.std(), 0.01, rtol=0.15)
  np.testing.assert_array_equal(params["head"]["bias"], 0.0)
