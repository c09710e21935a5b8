"""dense_votes against a per-position NumPy argmax with PyTorch's bilinear resize."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zipfls_jax
from tests import reference


def _reference_votes(fmap, kernel, bias, upsample):
  x = np.asarray(fmap, np.float64)
  if upsample:
    x = reference.bilinear_upsample_torch(x, upsample)
  logits = x.reshape(x.shape[0], -1, x.shape[-1]) @ kernel + bias
  return logits.argmax(-1)


@pytest.mark.parametrize("upsample", [None, 2, 3])
def test_votes_match_per_position_argmax(upsample):
  rng = np.random.default_rng(0)
  fmap = rng.normal(size=(3, 4, 5, 8)).astype(np.float32)
  kernel = rng.normal(size=(8, 11)).astype(np.float32)
  bias = rng.normal(size=11).astype(np.float32)
  got = jax.jit(lambda f, k, b: zipfls_jax.dense_votes(f, k, b, upsample=upsample))(
      fmap, kernel, bias)
  factor = upsample or 1
  assert got.shape == (3, 4 * 5 * factor ** 2) and got.dtype == jnp.int32
  np.testing.assert_array_equal(got, _reference_votes(fmap, kernel, bias, upsample))


def test_upsample_matches_pytorch_align_corners_false():
  x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2) ** 1.5
  np.testing.assert_allclose(zipfls_jax.upsample_bilinear(x, 2),
                             reference.bilinear_upsample_torch(x, 2), rtol=1e-5)
  # Hand case, one row [0, 4]: PyTorch x2 gives [0, 1, 3, 4].
  row = np.array([0.0, 4.0], np.float32).reshape(1, 1, 2, 1)
  np.testing.assert_allclose(zipfls_jax.upsample_bilinear(row, 2)[0, 0, :, 0], [0, 1, 3, 4])


def test_blocked_path_equals_direct_path():
  rng = np.random.default_rng(1)
  fmap = rng.normal(size=(5, 3, 3, 16)).astype(np.float32)
  kernel = rng.normal(size=(16, 37)).astype(np.float32)
  direct = zipfls_jax.dense_votes(fmap, kernel)
  blocked = zipfls_jax.dense_votes(fmap, kernel, block_elements=37 * 4)  # 4 rows a block
  np.testing.assert_array_equal(blocked, direct)
  np.testing.assert_array_equal(direct, _reference_votes(fmap, kernel, 0.0, None))


def test_inat_scale_runs_in_bounded_memory():
  # N=32, 14x14 positions after x2, D=2048, C=10,000: the full logits are 251 MB.
  fn = jax.jit(lambda f, k, b: zipfls_jax.dense_votes(f, k, b, upsample=2))
  compiled = fn.lower(jax.ShapeDtypeStruct((32, 7, 7, 2048), jnp.float32),
                      jax.ShapeDtypeStruct((2048, 10000), jnp.float32),
                      jax.ShapeDtypeStruct((10000,), jnp.float32)).compile()
  full_logits = 32 * 14 * 14 * 10000 * 4
  assert compiled.memory_analysis().temp_size_in_bytes < full_logits / 2


def test_votes_have_no_gradient():
  fmap = jnp.ones((1, 2, 2, 3))
  grad = jax.grad(lambda f: zipfls_jax.dense_votes(f, jnp.eye(3)).sum().astype(jnp.float32))(fmap)
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("fmap,kernel,kw,error,match", [
    (np.ones((2, 3, 3)), np.ones((3, 4)), {}, ValueError, "feature_map"),
    (np.ones((2, 3, 3, 5)), np.ones((3, 4)), {}, ValueError, "kernel"),
    (np.ones((2, 3, 3, 3)), np.ones((3, 4)), {"bias": np.ones(5)}, ValueError, "bias"),
    (np.ones((2, 3, 3, 3)), np.ones((3, 4)), {"upsample": 1.5}, ValueError, "upsample"),
    (np.ones((2, 3, 3, 3), np.int32), np.ones((3, 4)), {}, TypeError, "feature_map"),
])
def test_bad_input(fmap, kernel, kw, error, match):
  with pytest.raises(error, match=match):
    zipfls_jax.dense_votes(jnp.asarray(fmap), jnp.asarray(kernel, jnp.float32), **kw)
