"""in_range_ids and scatter_add_rows, also on explicitly sharded arrays."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from zipfls_jax.indexing import in_range_ids, scatter_add_rows


def _loop_reference(operand, ids, updates):
  out = np.array(operand, copy=True)
  for b in range(ids.shape[0]):
    for k in range(ids.shape[1]):
      if 0 <= ids[b, k] < out.shape[1]:
        out[b, ids[b, k]] += updates[b, k]
  return out


def test_adds_repeated_ids_per_row():
  ids = np.array([[0, 0, 3], [5, 1, 1]])
  updates = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
  operand = np.ones((2, 6), np.float32)
  got = jax.jit(scatter_add_rows)(operand, ids, updates)
  np.testing.assert_array_equal(got, _loop_reference(operand, ids, updates))
  np.testing.assert_array_equal(got, [[4, 1, 1, 4, 1, 1], [1, 12, 1, 1, 1, 5]])


def test_keeps_the_batch_sharding_of_an_explicit_mesh():
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 7, size=(16, 5))
  updates = np.ones((16, 5), np.float32)
  operand = np.zeros((16, 7), np.float32)
  sharded = jax.device_put((operand, ids, updates), jax.NamedSharding(mesh, P("data")))
  got = jax.jit(scatter_add_rows)(*sharded)
  assert got.sharding.spec[0] == "data"
  np.testing.assert_array_equal(got, _loop_reference(operand, ids, updates))
  # A scalar update broadcasts, as the vote histogram uses it.
  np.testing.assert_array_equal(jax.jit(scatter_add_rows)(sharded[0], sharded[1], 1.0),
                                _loop_reference(operand, ids, updates))


def test_in_range_ids_sends_the_rest_to_zero():
  safe, in_range = in_range_ids(jnp.array([[3, -1, 5, 0]]), 5)
  np.testing.assert_array_equal(safe, [[3, 0, 0, 0]])
  np.testing.assert_array_equal(in_range, [[True, False, False, True]])
  assert safe.dtype == jnp.uint32
