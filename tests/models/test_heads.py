"""VotingHead: a drop-in for "global average pool + nn.Dense" that also votes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from tests.models import numpy_reference as ref
from zipfls_jax.models import ModelOutput, VotingHead, join_exits


def test_numpy_reference_bilinear_matches_pytorch_hand_values():
  # torch.nn.functional.interpolate([[0, 1]], scale_factor=2, mode='linear',
  # align_corners=False) == [0, 0.25, 0.75, 1]; the 2-D resize is separable.
  fmap = np.array([0.0, 1.0]).reshape(1, 1, 2, 1)
  out = ref.bilinear_upsample(np.repeat(fmap, 2, axis=1), 2)
  np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.25, 0.75, 1.0])
  np.testing.assert_allclose(out[0, 3, :, 0], [0.0, 0.25, 0.75, 1.0])


@pytest.fixture(scope="module")
def head_case():
  fmap = jax.random.normal(jax.random.key(0), (3, 4, 5, 16))
  head = VotingHead(7, vote_upsample=2)
  variables = head.init(jax.random.key(1), fmap)
  return head, variables, fmap


def test_params_are_those_of_nn_dense(head_case):
  head, variables, fmap = head_case
  dense_vars = nn.Dense(7).init(jax.random.key(1), fmap.mean(axis=(1, 2)))
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  assert shapes(variables) == shapes(dense_vars)
  # Same params through nn.Dense on pooled features give the same logits.
  out = head.apply(variables, fmap)
  np.testing.assert_allclose(
      out.logits, nn.Dense(7).apply(variables, fmap.mean(axis=(1, 2))), rtol=1e-5, atol=1e-5)


def test_logits_features_votes_match_numpy(head_case):
  head, variables, fmap = head_case
  out = jax.jit(lambda v, f: head.apply(v, f, votes=True))(variables, fmap)
  kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
  features, logits = ref.pooled_logits(fmap, kernel, bias)
  np.testing.assert_allclose(out.features, features, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.logits, logits, rtol=1e-5, atol=1e-5)
  assert out.logits.dtype == jnp.float32
  assert out.votes.dtype == jnp.int32 and out.votes.shape == (3, 8 * 10)
  ref.assert_votes_match(out.votes, ref.position_logits(fmap, kernel, bias, upsample=2))


def test_votes_change_neither_logits_nor_gradients(head_case):
  head, variables, fmap = head_case

  def loss(params, votes):
    out = head.apply({"params": params}, fmap, votes=votes)
    return jnp.sum(out.logits ** 2), out

  (value_v, out_v), grads_v = jax.value_and_grad(loss, has_aux=True)(variables["params"], True)
  (value_n, out_n), grads_n = jax.value_and_grad(loss, has_aux=True)(variables["params"], False)
  assert out_n.votes is None and out_v.votes is not None
  np.testing.assert_array_equal(value_v, value_n)
  jax.tree.map(np.testing.assert_array_equal, grads_v, grads_n)


def test_bf16_feature_map_gives_float32_logits(head_case):
  head, variables, fmap = head_case
  out = head.apply(variables, fmap.astype(jnp.bfloat16), votes=True)
  assert out.logits.dtype == jnp.float32 and out.features.dtype == jnp.float32
  np.testing.assert_allclose(out.logits, head.apply(variables, fmap).logits, atol=0.05)


def test_dropout_applies_to_the_classifier_only():
  fmap = jax.random.normal(jax.random.key(0), (4, 2, 2, 32))
  head = VotingHead(5, dropout_rate=0.5)
  variables = head.init(jax.random.key(1), fmap)
  eval_out = head.apply(variables, fmap, votes=True)
  train_out = head.apply(variables, fmap, votes=True, deterministic=False,
                         rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(train_out.features, eval_out.features)
  np.testing.assert_array_equal(train_out.votes, eval_out.votes)
  assert not np.allclose(train_out.logits, eval_out.logits)


def test_join_exits_orders_votes_final_first():
  final = ModelOutput(logits=jnp.zeros((2, 3)), features=jnp.zeros((2, 4)),
                      votes=jnp.full((2, 2), 7, jnp.int32))
  exits = [ModelOutput(logits=jnp.ones((2, 3)), features=jnp.zeros((2, 4)),
                       votes=jnp.full((2, 3), k, jnp.int32)) for k in (1, 2)]
  joined = join_exits(final, exits, vote_exits=True)
  np.testing.assert_array_equal(joined.votes[0], [7, 7, 1, 1, 1, 2, 2, 2])
  assert len(joined.exit_logits) == 2 and joined.exit_features == ()
  assert join_exits(final, exits, vote_exits=False).votes.shape == (2, 2)
  # Bottleneck exits also hand on their pooled features, shallowest first.
  exits = [e.replace(features=jnp.full((2, 4), k, jnp.float32)) for k, e in zip((1, 2), exits)]
  joined = join_exits(final, exits, vote_exits=False, exit_features=True)
  assert [float(f[0, 0]) for f in joined.exit_features] == [1.0, 2.0]


@pytest.mark.parametrize("bad, error", [
    (dict(feature_map=jnp.zeros((2, 4, 8))), ValueError),
    (dict(feature_map=jnp.zeros((2, 2, 2, 8)), vote_upsample=0), ValueError),
])
def test_bad_input_raises(bad, error):
  head = VotingHead(3, vote_upsample=bad.get("vote_upsample"))
  with pytest.raises(error, match="feature_map|vote_upsample"):
    head.init(jax.random.key(0), bad["feature_map"], votes=True)
