"""Row-wise lookups for the loss: in-range index promises, explicit sharding.

Two things every gather and scatter of the vote path needs, in one place:

* `in_range_ids` sends ids the caller wants ignored to 0 (with a mask to
  zero their effect) as unsigned ints, so the lookups can promise XLA
  in-bounds indices. On XLA:CPU the bounds and wrap-around selects that
  XLA otherwise wraps around each gather and scatter cost more than the
  lookups themselves at the loss's sizes.
* `scatter_add_rows` keeps the batch sharding of its indices.
  `jax.make_mesh` gives Explicit axes by default in current JAX, and there
  a scatter whose operand and indices are sharded along the batch cannot
  infer its output sharding and refuses to trace. With this helper the
  loss runs under plain `jit` on sharded global arrays, `shard_map`,
  `pmap` and `vmap` alike.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def in_range_ids(ids: jax.Array, size: int):
  """(ids in [0, size) as uint32 with the others sent to 0, in-range mask)."""
  in_range = (ids >= 0) & (ids < size)
  return jnp.where(in_range, ids, 0).astype(jnp.uint32), in_range


def scatter_add_rows(operand: jax.Array, ids: jax.Array, updates) -> jax.Array:
  """operand[b, ids[b, k]] += updates[b, k] for (B, X) operand, (B, K) ids.

  `ids` must lie in [0, X) (see `in_range_ids`): callers send an id they
  want ignored to 0 with a zero update.
  """
  rows = jnp.arange(ids.shape[0])[:, None]
  sharding = getattr(jax.typeof(ids), "sharding", None)
  kwargs = {}
  if (isinstance(sharding, NamedSharding) and not sharding.mesh.empty
      and AxisType.Explicit in sharding.mesh.axis_types):
    batch_spec = sharding.spec[0] if len(sharding.spec) else None
    kwargs["out_sharding"] = NamedSharding(sharding.mesh, PartitionSpec(batch_spec, None))
  return operand.at[rows, ids.astype(jnp.uint32)].add(updates, mode="promise_in_bounds",
                                                      **kwargs)
