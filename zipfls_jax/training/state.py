"""The training state: everything a step reads and writes, as one pytree.

A `TrainState` is what gets checkpointed, replicated over devices and donated
to the jitted step. It holds no functions (the model and optimizer are
passed to the step builder), so the same state works under jit, shard_map
and pmap, and under `jax.eval_shape` for restoring checkpoints.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Parameters, BatchNorm statistics, optimizer state, step and RNG key.

  Attributes:
    step: int32 scalar, the number of optimizer updates done.
    params: model parameters (float32).
    batch_stats: BatchNorm running statistics.
    opt_state: optax state.
    rng: typed PRNG key; the step's key is `fold_in(rng, step)`, so random
      target distributions get fresh draws each step and a resumed run
      draws the same ones.
    method_state: what the training method carries across steps
      (`Method.init_state`; an empty dict for the methods that carry
      nothing), checkpointed with the rest.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  method_state: Any = flax.struct.field(default_factory=dict)


def create_train_state(rng: jax.Array,
                       model: nn.Module,
                       tx: optax.GradientTransformation,
                       *,
                       image_shape: Sequence[int],
                       method_state: Any = None) -> TrainState:
  """Initialises a model and optimizer; jittable and `eval_shape`-able.

  Args:
    rng: typed PRNG key (`jax.random.key`).
    model: a linen module called as `model(images, train=False)` whose
      variables hold 'params' and (possibly empty) 'batch_stats'.
    tx: the optimizer.
    image_shape: (H, W, C) of one input image.
    method_state: the method's initial state (`Method.init_state`); None
      for none.

  Returns:
    A fresh `TrainState` at step 0.
  """
  if len(image_shape) != 3:
    raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}.")
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init(init_rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      rng=state_rng,
      method_state={} if method_state is None else method_state,
  )


def init_from_pytorch(state: TrainState,
                      model: nn.Module,
                      tx: optax.GradientTransformation,
                      path: str,
                      *,
                      sharding: Optional[jax.sharding.Sharding] = None
                      ) -> Tuple[TrainState, Tuple[str, ...]]:
  """A fresh state with its weights taken from a PyTorch file.

  Runs on the host, outside `jit`: the file's arrays are placed with
  `sharding` (e.g. replicated over the mesh), never baked into a compiled
  program. The backbone must match exactly; the classifier and exit heads
  keep their fresh initialisation when the file's class count differs, and
  BYOT's bottleneck exits always do (PyTorch files have none;
  `zipfls_jax.models.merge_pytorch_weights`). The optimizer state is
  initialised for the new parameters.

  Returns:
    (state, the modules kept from the fresh initialisation: empty when the
    file has weights for every one).
  """
  from zipfls_jax import models  # pylint: disable=g-import-not-at-top
  fresh = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  merged, kept = models.merge_pytorch_weights(fresh, model, path)
  if sharding is None:
    params, batch_stats = jax.tree.map(jnp.asarray, (merged["params"], merged["batch_stats"]))
    opt_state = jax.jit(tx.init)(params)
  else:
    params, batch_stats = jax.device_put((merged["params"], merged["batch_stats"]), sharding)
    opt_state = jax.jit(tx.init, out_shardings=sharding)(params)
  return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state), kept
