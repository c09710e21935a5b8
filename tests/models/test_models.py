"""Real forward passes of the tiny variants against NumPy references.

Each tiny variant exercises every code path of its full-size family (exits,
projection shortcuts, grouped and depthwise convolutions, dense concatenation)
at a size the CPU runs in a second. The head's feature maps are read back
through the 'intermediates' collection, and the logits and votes are
recomputed from them in NumPy.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from tests.models import numpy_reference as ref
from zipfls_jax.models import get_model, layers

# name -> (image side, has exits). ImageNet-style variants divide by 32, so
# they get 64x64 inputs to keep a 2x2 final map with a non-trivial resize.
TINY = {
    "cifar_resnet_tiny": (32, True),
    "cifar_densenet_tiny": (32, True),
    "resnet_tiny": (64, False),
    "resnext_tiny": (64, False),
    "densenet_tiny": (64, False),
    "mobilenet_v2_tiny": (32, False),
}
NUM_CLASSES = 10
BATCH = 4


def images_for(name, batch=BATCH, seed=0):
  side, _ = TINY[name]
  return jax.random.normal(jax.random.key(seed), (batch, side, side, 3))


@pytest.fixture(scope="module", params=sorted(TINY))
def run(request):
  """Init, one train-mode apply, and eval-mode applies of one tiny model."""
  name = request.param
  _, exits = TINY[name]
  model = get_model(name, num_classes=NUM_CLASSES, exits=exits, vote_exits=exits, vote_upsample=2)
  images = images_for(name)
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(images)
  # Zero running statistics: after one update they hold exactly 0.1 (PyTorch's
  # momentum) times the batch statistics, which the eval test reads back.
  zero_stats = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
  # Every BatchNorm's output is captured too: its shape gives the n of the
  # unbiased running variance.
  train_apply = jax.jit(lambda v, x: model.apply(
      v, x, train=True, votes=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda module, _: isinstance(module, layers.BatchNorm)))
  eval_apply = jax.jit(lambda v, x: model.apply(
      v, x, train=False, votes=True, mutable=["intermediates"]))
  train_out, train_state = train_apply(
      {"params": variables["params"], "batch_stats": zero_stats}, images)
  eval_out, eval_state = eval_apply(variables, images)
  return dict(name=name, model=model, images=images, variables=variables, exits=exits,
              train_out=train_out, train_state=train_state, eval_out=eval_out,
              eval_state=eval_state, eval_apply=eval_apply)


def head_names(exits):
  return ["head", "exit1_head", "exit2_head"] if exits else ["head"]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_logits_and_votes_match_numpy_heads(run, mode):
  out = run[f"{mode}_out"]
  maps = run[f"{mode}_state"]["intermediates"]
  params = run["variables"]["params"]
  logits, features, votes_ref = [], [], []
  for head in head_names(run["exits"]):
    fmap = np.asarray(maps[head]["feature_map"][0])
    if "densenet" in run["name"]:
      # Every DenseNet head, exits included, pools and votes after its own BN-ReLU.
      assert fmap.min() >= 0.0 and fmap.max() > 0.0
    kernel, bias = params[head]["kernel"], params[head]["bias"]
    feats, lgts = ref.pooled_logits(fmap, kernel, bias)
    features.append(feats)
    logits.append(lgts)
    votes_ref.append(ref.position_logits(fmap, kernel, bias, upsample=2))
  np.testing.assert_allclose(out.features, features[0], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.logits, logits[0], rtol=1e-4, atol=1e-5)
  assert len(out.exit_logits) == len(logits) - 1
  for got, want in zip(out.exit_logits, logits[1:]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # Votes: final head first, then the exits, shallowest first.
  ref.assert_votes_match(out.votes, np.concatenate(votes_ref, axis=1))
  assert out.logits.dtype == jnp.float32 and out.votes.dtype == jnp.int32


def bn_counts(intermediates):
  """Values per channel each BatchNorm saw: {path: N * H * W} from its captured output."""
  counts = {}
  for path, out in jax.tree.flatten_with_path(
      intermediates, is_leaf=lambda t: isinstance(t, tuple))[0]:
    if path[-1].key == "__call__":
      counts[tuple(p.key for p in path[:-1])] = int(np.prod(out[0].shape[:-1]))
  return counts


def test_train_and_eval_differ_only_in_batch_norm(run):
  """Eval with running statistics set to the batch's equals train mode.

  PyTorch's running statistics (momentum 0.1) after one update from zero hold
  0.1 * the batch mean and 0.1 * the *unbiased* batch variance, var * n / (n - 1)
  with n = N * H * W at that layer. Undoing both gives the batch's own
  statistics, which train mode normalised with, at every BN of the model.
  """
  new_stats = run["train_state"]["batch_stats"]
  counts = bn_counts(run["train_state"]["intermediates"])
  paths = {tuple(p.key for p in path[:-1])
           for path, _ in jax.tree.flatten_with_path(new_stats)[0]}
  assert paths == set(counts) and min(counts.values()) >= 16

  def batch_stat(path, s):
    key = tuple(p.key for p in path)
    n = counts[key[:-1]]
    return s / 0.1 * ((n - 1) / n if key[-1] == "var" else 1.0)

  batch_stats = jax.tree.map_with_path(batch_stat, new_stats)
  eval_out, _ = run["eval_apply"]({"params": run["variables"]["params"], "batch_stats": batch_stats},
                                  run["images"])
  train_out = run["train_out"]
  np.testing.assert_allclose(eval_out.logits, train_out.logits, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose(eval_out.features, train_out.features, rtol=1e-3, atol=1e-4)
  for got, want in zip(eval_out.exit_logits, train_out.exit_logits):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
  assert np.mean(np.asarray(eval_out.votes) == np.asarray(train_out.votes)) > 0.98
  # The comparison has teeth: with the initial running statistics eval differs,
  # and so it does when only the momentum is undone (as if the running
  # variance held biased variances, Flax's rule).
  assert not np.allclose(run["eval_out"].logits, train_out.logits, rtol=1e-3, atol=1e-4)
  momentum_only = jax.tree.map(lambda s: s / 0.1, new_stats)
  out, _ = run["eval_apply"]({"params": run["variables"]["params"], "batch_stats": momentum_only},
                             run["images"])
  assert not np.allclose(out.logits, train_out.logits, rtol=1e-3, atol=1e-4)


def test_eval_mode_leaves_batch_stats_alone_and_is_per_example(run):
  """Eval output of one image does not depend on the rest of the batch."""
  # Same shape as the fixture's batch, so the compiled eval step is reused.
  images = run["images"].at[1:].set(run["images"][1:] * 3.0 + 1.0)
  out, _ = run["eval_apply"](run["variables"], images)
  np.testing.assert_allclose(out.logits[:1], run["eval_out"].logits[:1], rtol=1e-4, atol=1e-5)
  assert not np.allclose(out.logits[1:], run["eval_out"].logits[1:], rtol=1e-4, atol=1e-5)
  assert "batch_stats" not in run["eval_state"]


def test_bf16_forward_is_close_to_float32():
  name = "cifar_resnet_tiny"
  images = images_for(name)
  f32 = get_model(name, num_classes=NUM_CLASSES)
  bf16 = get_model(name, num_classes=NUM_CLASSES, dtype=jnp.bfloat16)
  variables = jax.jit(lambda x: bf16.init(jax.random.key(1), x, train=False))(images)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  apply = lambda model: jax.jit(lambda v, x: model.apply(
      v, x, train=True, votes=True, mutable=["batch_stats"]))(variables, images)
  (out16, stats16), (out32, _) = apply(bf16), apply(f32)
  assert out16.logits.dtype == jnp.float32
  scale = float(np.abs(out32.logits).max())
  np.testing.assert_allclose(out16.logits, out32.logits, atol=0.02 * scale)
  np.testing.assert_allclose(out16.features, out32.features,
                             atol=0.02 * float(np.abs(out32.features).max()))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(stats16))
  # A poorly rounded model still votes mostly like the float32 one.
  assert np.mean(np.asarray(out16.votes) == np.asarray(out32.votes)) > 0.9


def test_cross_device_batch_norm_equals_full_batch():
  """With bn_axis_name, 8 shards of a batch see the statistics of the whole batch."""
  name = "cifar_resnet_tiny"
  images = images_for(name, batch=8, seed=3)
  single = get_model(name, num_classes=NUM_CLASSES, exits=True)
  synced = get_model(name, num_classes=NUM_CLASSES, exits=True, bn_axis_name="batch")
  variables = jax.jit(lambda x: single.init(jax.random.key(1), x, train=False))(images)
  mesh = jax.make_mesh((8,), ("batch",))
  images = jax.device_put(images, NamedSharding(mesh, P("batch")))
  variables = jax.device_put(variables, NamedSharding(mesh, P()))

  def step(v, x):
    return synced.apply(v, x, train=True, votes=True, mutable=["batch_stats"])

  sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("batch")),
                                  out_specs=(P("batch"), P())))
  out_sharded, stats_sharded = sharded(variables, images)
  out_full, stats_full = jax.jit(lambda v, x: single.apply(
      v, x, train=True, votes=True, mutable=["batch_stats"]))(variables, images)
  np.testing.assert_allclose(out_sharded.logits, out_full.logits, rtol=1e-3, atol=1e-4)
  for got, want in zip(out_sharded.exit_logits, out_full.exit_logits):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               stats_sharded, stats_full)
  # Without the axis name each shard normalises by its single example.
  unsynced = jax.jit(jax.shard_map(
      lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"])[0].logits,
      mesh=mesh, in_specs=(P(), P("batch")), out_specs=P("batch")))
  assert not np.allclose(unsynced(variables, images), out_full.logits, rtol=1e-3, atol=1e-4)
