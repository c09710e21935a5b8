"""Row-wise scatter-add that also traces under explicit-sharding meshes.

`jax.make_mesh` gives Explicit axes by default in current JAX; there a
scatter whose operand and indices are sharded along the batch cannot infer
its output sharding and refuses to trace. Every scatter of the loss goes
through here so it keeps the batch sharding of its indices and runs under
plain `jit` on sharded global arrays, `shard_map`, `pmap` and `vmap` alike.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec


def scatter_add_rows(operand: jax.Array, ids: jax.Array, updates) -> jax.Array:
  """operand[b, ids[b, k]] += updates[b, k] for (B, X) operand, (B, K) ids.

  `ids` must lie in [0, X): callers send an id they want ignored to 0 with a
  zero update. That promise (and unsigned indices) spares XLA:CPU the bounds
  and wrap-around selects around the scatter, which cost more than the
  scatter itself at the loss's sizes.
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
