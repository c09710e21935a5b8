"""PS-KD: progressive self-knowledge distillation from the last epoch's predictions.

Kim et al., "Self-Knowledge Distillation with Progressive Refinement of
Targets", ICCV 2021 (docs/method.md section 4). Each example's target
mixes its label with the softmax this model gave the same example during
the previous epoch's training pass:

    target_i = (1 - a_t) onehot(y_i) + a_t p_i,   a_t = alpha_final (t + 1) / T
    loss = mean soft CE(z_i, target_i)           (replaces the plain CE)

(`zipfls_jax.self_distillation.ps_kd_targets`; in epoch 0 the target is the
label). The predictions live in a store in the train state, one row per
training example, looked up and overwritten by the example's stable index
('index' in the batch, which the input pipeline provides). Each step reads
its examples' rows (written one epoch earlier) before writing the new ones.

Where the store lives: on the devices, replicated, in `store_dtype`
(bfloat16 by default: the targets then differ from float32's by at most
a_t * 2^-9 relative, which is below what training notices; float32 is a
config value away). It is 50,000 x 100 x 2 bytes = 10 MB for CIFAR-100 and
1.28M x 1,000 x 2 bytes = 2.6 GB per device for ImageNet; it is
checkpointed with the rest of the state, so a resumed run reads the same
predictions. Under the per-device step every device writes the rows of the
whole global batch (gathered), so the replicas stay identical.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from zipfls_jax import self_distillation
from zipfls_jax.training.methods import base

STORE_DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}


def _gather_replicated(x: jax.Array, axis_name) -> jax.Array:
  """Every device's rows of `x`, in device order, as a value replicated over `axis_name`.

  An `all_gather` written as the `psum` of each device's rows placed in a
  zero array: the same rows, but typed as identical on every device, which
  the replicated store needs (shard_map checks that replicated outputs are).
  The arrays are a batch of rows, so the sum costs what a gather would.
  """
  rows = x.shape[0]
  full = jnp.zeros((rows * jax.lax.psum(1, axis_name), *x.shape[1:]), x.dtype)
  full = jax.lax.dynamic_update_slice_in_dim(full, x, jax.lax.axis_index(axis_name) * rows,
                                             axis=0)
  return jax.lax.psum(full, axis_name)


@dataclasses.dataclass(frozen=True)
class PSKD(base.Method):
  """PS-KD; each field is `config.loss.ps_kd.<field>`.

  Attributes:
    alpha_final: a_T, the weight of the past predictions in the last epoch
      (0.8, the official code's).
    num_epochs: T of the schedule; 0 = the run's number of epochs (rounded
      up), filled in by `for_run`.
    store_dtype: 'bfloat16' or 'float32', the dtype of the stored
      predictions.
  """
  alpha_final: float = 0.8
  num_epochs: int = 0
  store_dtype: str = "bfloat16"

  name = "ps_kd"
  block = "ps_kd"

  @property
  def data_needs(self) -> base.DataNeeds:
    return base.DataNeeds(index=True)

  def for_run(self, *, total_steps: int, steps_per_epoch: int) -> "PSKD":
    if self.num_epochs:
      return self
    return dataclasses.replace(self, num_epochs=max(1, math.ceil(total_steps / steps_per_epoch)))

  def validate(self) -> None:
    if self.store_dtype not in STORE_DTYPES:
      raise ValueError(f"store_dtype must be one of {tuple(STORE_DTYPES)}, got "
                       f"{self.store_dtype!r}.")
    if isinstance(self.num_epochs, bool) or not isinstance(self.num_epochs, int) or (
        self.num_epochs < 0):
      raise ValueError(f"num_epochs must be an int >= 0 (0 = the run's), got "
                       f"{self.num_epochs!r}.")
    self_distillation.ps_kd_alpha(0, num_epochs=max(self.num_epochs, 1),
                                  alpha_final=self.alpha_final)

  def init_state(self, num_classes: int, num_examples: int = 0):
    if num_examples < 1:
      raise ValueError("PS-KD keeps one prediction per training example: init_state needs "
                       f"num_examples >= 1, got {num_examples}.")
    return {"store": jnp.zeros((num_examples, num_classes), STORE_DTYPES[self.store_dtype]),
            "epoch": jnp.zeros((), jnp.int32)}

  def loss(self, forward, batch, state, *, key=None, axis_name=None) -> base.MethodOutput:
    del key
    if not self.num_epochs:
      raise ValueError("PSKD.num_epochs is 0: build the method for its run "
                       "(`method.for_run(...)`) or set config.loss.ps_kd.num_epochs.")
    if "index" not in batch:
      raise ValueError("PS-KD needs each example's stable index: the batch has no 'index' "
                       f"(it has {sorted(batch)}).")
    labels, index = batch["label"], batch["index"]
    store = state["store"]
    output = forward(batch["image"])
    previous = store[index].astype(jnp.float32)
    targets = self_distillation.ps_kd_targets(labels, previous, epoch=state["epoch"],
                                              num_epochs=self.num_epochs,
                                              alpha_final=self.alpha_final)
    loss = base.global_mean(self_distillation.soft_cross_entropy(output.logits, targets),
                            axis_name)
    ce = base.cross_entropy(output.logits, labels, axis_name)
    probs = jax.nn.softmax(jax.lax.stop_gradient(output.logits).astype(jnp.float32), axis=-1)
    if axis_name is not None:
      index, probs = (_gather_replicated(x, axis_name) for x in (index, probs))
    store = store.at[index].set(probs.astype(store.dtype))
    return base.MethodOutput(loss, {"loss": loss, "ce": ce}, output.logits, labels,
                             dict(state, store=store))

  def end_epoch(self, state):
    return dict(state, epoch=state["epoch"] + 1)
