"""Train and eval steps of a tiny model over 8 fake CPU devices.

The mesh (jit) path, the per-device (shard_map) path and the pmap path must
agree on the same global batch; loss falls on a fixed batch; evaluation
counts exactly the unmasked rows; bf16 compute keeps float32 parameters.
"""
import functools

import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax import training
from zipfls_jax.models import get_model

NUM_CLASSES, BATCH, SIZE = 10, 16, 8
OBJECTIVE = training.Objective(method="zipf", lam=0.5, correct_only=True)


def tiny_model(**kwargs):
  return get_model("cifar_resnet_tiny", num_classes=NUM_CLASSES, vote_upsample=2, **kwargs)


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.normal(size=(BATCH, SIZE, SIZE, 3)).astype(np.float32),
          "label": rng.integers(0, NUM_CLASSES, size=BATCH).astype(np.int32)}


@functools.lru_cache(maxsize=None)
def setup():
  mesh = training.make_data_mesh()
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.05, lr_schedule="step", steps_per_epoch=10, num_epochs=1)
  tx = training.create_optimizer(schedule)
  init = jax.jit(functools.partial(training.create_train_state, model=tiny_model(), tx=tx,
                                   image_shape=(SIZE, SIZE, 3)),
                 out_shardings=training.replicated(mesh))
  return mesh, schedule, tx, init


def mesh_state():
  """A fresh copy of the same initial state (steps donate their input)."""
  return setup()[3](jax.random.key(0))


@functools.lru_cache(maxsize=None)
def run_mesh(batch_norm, steps, seed):
  mesh, schedule, tx, _ = setup()
  step = training.compile_train_step(tiny_model(), tx, OBJECTIVE, mesh,
                                     learning_rate_fn=schedule, batch_norm=batch_norm)
  state, batch = mesh_state(), training.shard_batch(make_batch(seed), mesh)
  history = []
  for _ in range(steps):
    with jax.transfer_guard("disallow"):
      state, metrics = step(state, batch)
    history.append(metrics)
  return state, jax.device_get(history)


def run_pmap(bn_axis_name, steps, seed):
  _, schedule, tx, _ = setup()
  step = training.pmap_train_step(tiny_model(bn_axis_name=bn_axis_name), tx, OBJECTIVE,
                                  learning_rate_fn=schedule, axis_name="batch")
  state = flax.jax_utils.replicate(mesh_state())
  batch = jax.tree.map(lambda a: a.reshape(8, BATCH // 8, *a.shape[1:]), make_batch(seed))
  history = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    history.append(metrics)
  return flax.jax_utils.unreplicate(state), jax.device_get(history)


def assert_states_close(a, b):
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5),
               jax.device_get(a.params), jax.device_get(b.params))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5),
               jax.device_get(a.batch_stats), jax.device_get(b.batch_stats))
  assert int(a.step) == int(b.step)


def test_loss_decreases_on_a_fixed_batch_and_state_is_donated():
  mesh, schedule, tx, _ = setup()
  step = training.compile_train_step(tiny_model(), tx, OBJECTIVE, mesh,
                                     learning_rate_fn=schedule)
  state, batch = mesh_state(), training.shard_batch(make_batch(), mesh)
  losses = []
  for i in range(6):
    old = state
    with jax.transfer_guard("disallow"):
      state, metrics = step(state, batch)
    if i == 0:
      assert jax.tree.leaves(old.params)[0].is_deleted()  # donated
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.8 * losses[0], losses
  assert int(state.step) == 6
  # The 6th step (index 5) is past the /10 boundary at 50% of 10 steps.
  assert float(metrics["learning_rate"]) == pytest.approx(0.005)
  assert float(metrics["zipf"]) > 0


def test_pmap_path_equals_mesh_path():
  mesh_final, mesh_metrics = run_mesh("sync", 2, 1)
  pmap_final, pmap_metrics = run_pmap("batch", 2, 1)
  assert_states_close(mesh_final, pmap_final)
  for m, p in zip(mesh_metrics, pmap_metrics):
    for key in ("loss", "ce", "zipf", "top1", "top5"):
      np.testing.assert_allclose(m[key], p[key][0], rtol=1e-4, err_msg=key)


def test_per_device_batch_norm_equals_pmap_without_sync():
  shard_final, shard_metrics = run_mesh("per_device", 2, 1)
  pmap_final, pmap_metrics = run_pmap(None, 2, 1)
  assert_states_close(shard_final, pmap_final)
  np.testing.assert_allclose(shard_metrics[-1]["loss"], pmap_metrics[-1]["loss"][0], rtol=1e-4)
  # Normalising 2-example shards is not normalising the global batch.
  sync_final, _ = run_mesh("sync", 2, 1)
  diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))),
                       sync_final.params, shard_final.params)
  assert max(jax.tree.leaves(diffs)) > 1e-3


def test_bfloat16_compute_keeps_float32_params():
  mesh, schedule, tx, _ = setup()
  step = training.compile_train_step(tiny_model(dtype=jnp.bfloat16), tx, OBJECTIVE, mesh,
                                     learning_rate_fn=schedule)
  state, metrics = step(mesh_state(), training.shard_batch(make_batch(), mesh))
  assert np.isfinite(float(metrics["loss"]))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}


def test_topk_correct_counts_ties_for_the_label():
  logits = jnp.array([[3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 5.0, 4.0, 3.0]])
  labels = jnp.array([2, 3, 0])
  np.testing.assert_array_equal(training.topk_correct(logits, labels, 1), [False, True, False])
  np.testing.assert_array_equal(training.topk_correct(logits, labels, 2), [True, True, False])
  np.testing.assert_array_equal(training.topk_correct(logits, labels, 3), [True, True, False])


def test_prefetch_places_batches_in_order_reading_at_most_size_ahead():
  mesh = training.make_data_mesh()
  read = []

  def batches():
    for i in range(5):
      read.append(i)
      yield {"x": np.full((8, 2), i, np.float32)}

  placed = training.prefetch_to_mesh(batches(), mesh, size=2)
  first = next(placed)
  assert read == [0, 1]
  assert first["x"].sharding == training.batch_sharded(mesh)
  assert first["x"].addressable_shards[3].data.shape == (1, 2)
  second = next(placed)
  assert read == [0, 1, 2]
  values = [first, second, *placed]
  assert [float(b["x"][0, 0]) for b in values] == [0.0, 1.0, 2.0, 3.0, 4.0]
  with pytest.raises(ValueError, match="size must be an int >= 1, got 0"):
    next(training.prefetch_to_mesh(batches(), mesh, size=0))


def test_eval_step_counts_only_unmasked_rows():
  mesh, _, _, _ = setup()
  model = tiny_model()
  state = mesh_state()
  batch = make_batch(3)
  batch["mask"] = np.arange(BATCH) < 11
  sums = jax.device_get(training.compile_eval_step(model, mesh)(
      state, training.shard_batch(batch, mesh)))
  logits = np.asarray(model.apply({"params": state.params, "batch_stats": state.batch_stats},
                                  batch["image"], train=False).logits)
  rank = (logits > logits[np.arange(BATCH), batch["label"]][:, None]).sum(-1)
  assert sums["count"] == 11
  assert sums["top1"] == np.sum((rank < 1) & batch["mask"])
  assert sums["top5"] == np.sum((rank < 5) & batch["mask"])
