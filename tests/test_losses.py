"""Losses against the NumPy reference; gradients; jit/vmap/pmap/shard_map; errors."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import zipfls_jax
from zipfls_jax import targets
from tests import reference


def _problem(n, c, k, seed=0, scale=3.0, num_voted=None):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, c)) * scale).astype(np.float32)
  labels = rng.integers(0, c, size=n).astype(np.int32)
  votes = rng.integers(0, num_voted or min(c, 8), size=(n, k)).astype(np.int32)
  return logits, labels, votes


def _reference_terms(logits, labels, votes, name="zipf", **kw):
  scores = logits if votes is None else reference.counts(votes, logits.shape[1])
  q = reference.targets(scores, labels, name, **kw)
  return reference.cross_entropy(logits, labels), reference.kl_non_target(logits, labels, q)


@pytest.mark.parametrize("n,c,k", [(7, 2, 5), (9, 10, 16), (16, 100, 64), (4, 10000, 49)])
@pytest.mark.parametrize("use_votes", [True, False])
def test_terms_match_reference(n, c, k, use_votes):
  logits, labels, votes = _problem(n, c, k, seed=c)
  if use_votes:
    labels[: n // 2] = votes[: n // 2, 0]   # half the labels voted, half not
  else:
    logits = np.round(logits)                # ties among logits
    votes = None
  terms = jax.jit(lambda z, y, v: zipfls_jax.zipf_label_smoothing_terms(z, y, votes=v))(
      logits, labels, votes)
  ce, kl = _reference_terms(logits, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(terms.correct, np.argmax(logits, -1) == labels)


class JitAndEagerTest(chex.TestCase):
  """The same values traced and run op by op."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_matches_reference(self):
    logits, labels, votes = _problem(6, 30, 12, seed=17)
    loss = self.variant(lambda z, y, v: zipfls_jax.zipf_label_smoothing_loss(
        z, y, votes=v, lam=0.1))(logits, labels, votes)
    ce, kl = _reference_terms(logits, labels, votes)
    np.testing.assert_allclose(loss, ce + 0.1 * kl, rtol=1e-5)


@pytest.mark.parametrize("name,kw", [
    ("zipf", {"power": 1.7}),
    ("constant", {}),
    ("linear_decay", {"smallest_prob": 0.0}),
    ("linear_decay", {"smallest_prob": 0.004}),
    ("exponential_decay", {"decay": 0.5}),
    ("unbiased_zipf", {}),
    ("unbiased_zipf", {"power": 2.0, "lower_bound": 2.0}),
])
def test_vote_path_matches_reference_for_every_ranked_distribution(name, kw):
  logits, labels, votes = _problem(12, 200, 32, seed=3, num_voted=20)
  labels[:6] = votes[:6, 3]
  fn = jax.jit(lambda z, y, v: zipfls_jax.zipf_label_smoothing_terms(
      z, y, votes=v, distribution=name, **kw).kl)
  np.testing.assert_allclose(fn(logits, labels, votes),
                             _reference_terms(logits, labels, votes, name, **kw)[1],
                             rtol=1e-4, atol=1e-5)


def test_linear_decay_limit_falls_back_to_uniform():
  # C = 2, smallest_prob 0: the only non-target class has weight 0 if it ranks last.
  logits = jnp.array([[1.0, -1.0]])
  labels = jnp.array([0])
  votes = jnp.array([[0, 0]])
  kl = zipfls_jax.zipf_label_smoothing_terms(logits, labels, votes=votes,
                                             distribution="linear_decay").kl
  q = zipfls_jax.zipf_targets(jnp.array([[2, 0]]), labels, distribution="linear_decay")
  np.testing.assert_allclose(q, [[0.0, 1.0]])
  np.testing.assert_allclose(kl, 0.0, atol=1e-6)   # one non-target class: KL is 0


@pytest.mark.parametrize("name", targets.RANDOM_DISTRIBUTIONS)
def test_random_distributions_with_votes_use_the_dense_targets(name):
  logits, labels, votes = _problem(5, 30, 12, seed=1)
  key = jax.random.key(7)
  got = zipfls_jax.zipf_label_smoothing_terms(logits, labels, votes=votes, distribution=name,
                                              key=key).kl
  q = zipfls_jax.zipf_targets(zipfls_jax.vote_counts(votes, 30), labels, distribution=name,
                              key=key)
  np.testing.assert_allclose(got, reference.kl_non_target(logits, labels, np.asarray(q)),
                             rtol=1e-4, atol=1e-6)


def test_bf16_logits_computed_in_f32():
  logits, labels, votes = _problem(8, 100, 16, seed=4)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  terms = zipfls_jax.zipf_label_smoothing_terms(bf16, labels, votes=votes)
  assert terms.kl.dtype == jnp.float32 and terms.ce.dtype == jnp.float32
  rounded = np.asarray(bf16.astype(jnp.float32))
  ce, kl = _reference_terms(rounded, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("use_votes", [True, False])
def test_huge_logits_stay_finite_and_exact(use_votes):
  logits, labels, votes = _problem(8, 1000, 49, seed=5, scale=1e4)
  logits = np.clip(logits, -1e4, 1e4)
  logits[0, labels[0]] = 1e4             # dominant target
  logits[1, :] = -1e4
  votes = votes if use_votes else None
  fn = jax.jit(jax.value_and_grad(
      lambda z: zipfls_jax.zipf_label_smoothing_loss(z, labels, votes=votes).sum()))
  value, grad = fn(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  terms = zipfls_jax.zipf_label_smoothing_terms(logits, labels, votes=votes)
  ce, kl = _reference_terms(logits, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-2)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-2)


@pytest.mark.parametrize("use_votes", [True, False])
def test_gradients_numerically_and_against_the_formula(use_votes):
  logits, labels, votes = _problem(4, 12, 9, seed=6, scale=1.0)
  votes = votes if use_votes else None
  lam = 0.3
  loss = lambda z: zipfls_jax.zipf_label_smoothing_loss(z, labels, votes=votes, lam=lam).sum()
  check_grads(loss, (jnp.asarray(logits, jnp.float64) if jax.config.x64_enabled
                     else jnp.asarray(logits),), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
  # d/dz = softmax(z) - onehot(y) + lam * [j != y] (softmax_{j != y}(z) - q).
  grad = jax.grad(loss)(jnp.asarray(logits))
  scores = logits if votes is None else reference.counts(votes, 12)
  q = reference.targets(scores, labels)
  z = logits.astype(np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = p.copy()
  want[np.arange(4), labels] -= 1
  for i in range(4):
    keep = np.arange(12) != labels[i]
    e = np.exp(z[i, keep] - z[i, keep].max())
    want[i, keep] += lam * (e / e.sum() - q[i, keep])
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_kl_term_gives_target_logit_no_gradient():
  logits, labels, votes = _problem(6, 20, 10, seed=8)
  grad = jax.grad(lambda z: zipfls_jax.zipf_label_smoothing_terms(
      z, labels, votes=votes).kl.sum())(jnp.asarray(logits))
  np.testing.assert_array_equal(np.asarray(grad)[np.arange(6), labels], 0.0)
  q = zipfls_jax.zipf_targets(logits, labels)
  grad_q = jax.grad(lambda t: zipfls_jax.zipf_loss(logits, labels, t).sum())(q)
  np.testing.assert_array_equal(grad_q, 0.0)


def test_zipf_loss_with_dense_targets_matches_reference():
  logits, labels, votes = _problem(10, 50, 20, seed=9)
  q = reference.targets(reference.counts(votes, 50), labels)
  got = jax.jit(zipfls_jax.zipf_loss)(logits, labels, q.astype(np.float32))
  np.testing.assert_allclose(got, reference.kl_non_target(logits, labels, q), rtol=1e-4,
                             atol=1e-6)


def test_where_equals_boolean_indexing():
  logits, labels, votes = _problem(10, 30, 8, seed=10)
  where = np.arange(10) % 3 != 0
  masked = zipfls_jax.zipf_label_smoothing_loss(logits, labels, votes=votes, where=where)
  kept = zipfls_jax.zipf_label_smoothing_loss(logits[where], labels[where], votes=votes[where])
  np.testing.assert_allclose(np.asarray(masked)[where], kept, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  q = zipfls_jax.zipf_targets(logits, labels)
  masked = zipfls_jax.zipf_loss(logits, labels, q, where=where)
  np.testing.assert_allclose(np.asarray(masked)[where],
                             zipfls_jax.zipf_loss(logits[where], labels[where], q[where]),
                             rtol=1e-6)


def test_loss_is_ce_plus_lambda_kl():
  logits, labels, votes = _problem(5, 40, 16, seed=11)
  ce, kl = _reference_terms(logits, labels, votes)
  got = zipfls_jax.zipf_label_smoothing_loss(logits, labels, votes=votes, lam=0.1)
  np.testing.assert_allclose(got, ce + 0.1 * kl, rtol=1e-5)


def test_label_smoothing_authors_form():
  logits, labels, _ = _problem(6, 10, 1, seed=12)
  got = jax.jit(functools.partial(zipfls_jax.label_smoothing_loss, eps=0.1))(logits, labels)
  uniform = np.full((6, 10), 1 / 9)
  np.testing.assert_allclose(got, reference.smoothed_cross_entropy(logits, labels, uniform, 0.1),
                             rtol=1e-5)
  # Hand case: C = 2, eps = 0.2, logits 0: loss = log 2 whatever the split.
  np.testing.assert_allclose(
      zipfls_jax.label_smoothing_loss(jnp.zeros((1, 2)), jnp.array([1]), eps=0.2), [np.log(2)],
      rtol=1e-6)


def test_label_smooth_zipf():
  logits, labels, votes = _problem(6, 25, 12, seed=13)
  q = zipfls_jax.zipf_targets(zipfls_jax.vote_counts(votes, 25), labels)
  got = zipfls_jax.label_smooth_zipf_loss(logits, labels, q, eps=0.3)
  want = reference.smoothed_cross_entropy(logits, labels, reference.targets(
      reference.counts(votes, 25), labels), 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masked_batch_mean():
  values = jnp.array([1.0, 2.0, 3.0, 4.0])
  np.testing.assert_allclose(zipfls_jax.masked_batch_mean(values, jnp.array([1, 0, 1, 0]) > 0),
                             2.0)
  np.testing.assert_allclose(zipfls_jax.masked_batch_mean(values, jnp.zeros(4, bool)), 0.0)


# --- transformations over 8 fake CPU devices ---------------------------------

def _zipf(z, y, v):
  return zipfls_jax.zipf_label_smoothing_loss(z, y, votes=v, lam=0.1)


def test_vmap_matches_batch():
  logits, labels, votes = _problem(8, 20, 6, seed=14)
  batched = _zipf(logits, labels, votes)
  mapped = jax.vmap(lambda z, y, v: _zipf(z[None], y[None], v[None])[0])(logits, labels, votes)
  np.testing.assert_allclose(mapped, batched, rtol=1e-6)
  # Per-example inputs (no batch axis) work too: leading axes are free.
  np.testing.assert_allclose(jax.vmap(_zipf)(logits, labels, votes), batched, rtol=1e-6)


def test_pmap_and_shard_map_match_single_device():
  assert jax.device_count() == 8
  logits, labels, votes = _problem(16, 30, 8, seed=15)
  want = np.asarray(_zipf(logits, labels, votes))
  shaped = [x.reshape(8, 2, *x.shape[1:]) for x in (logits, labels, votes)]
  np.testing.assert_allclose(jax.pmap(_zipf)(*shaped).reshape(-1), want, rtol=1e-6)

  mesh = jax.make_mesh((8,), ("data",))
  sharded = jax.jit(jax.shard_map(_zipf, mesh=mesh, in_specs=P("data"), out_specs=P("data")))
  inputs = jax.device_put((logits, labels, votes), jax.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(sharded(*inputs), want, rtol=1e-6)
  # Plain jit over sharded global arrays (explicit and auto axes), value and grad.
  want_grad = jax.grad(lambda z: _zipf(z, labels, votes).sum())(logits)
  auto = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  for m in (mesh, auto):
    inputs = jax.device_put((logits, labels, votes), jax.NamedSharding(m, P("data")))
    np.testing.assert_allclose(jax.jit(_zipf)(*inputs), want, rtol=1e-6)
    grad = jax.jit(jax.grad(lambda z, y, v: _zipf(z, y, v).sum()))(*inputs)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7)


def test_masked_batch_mean_is_exact_across_devices():
  rng = np.random.default_rng(16)
  values = rng.normal(size=16).astype(np.float32)
  mask = np.zeros(16, bool)
  mask[[0, 1, 2, 9]] = True   # uneven across devices: per-device means would be wrong
  mesh = jax.make_mesh((8,), ("data",))
  fn = jax.jit(jax.shard_map(
      functools.partial(zipfls_jax.masked_batch_mean, axis_name="data"), mesh=mesh,
      in_specs=P("data"), out_specs=P()))
  inputs = jax.device_put((values, mask), jax.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(fn(*inputs), values[mask].mean(), rtol=1e-6)
  pmapped = jax.pmap(functools.partial(zipfls_jax.masked_batch_mean, axis_name="d"),
                     axis_name="d")(values.reshape(8, 2), mask.reshape(8, 2))
  np.testing.assert_allclose(pmapped, np.full(8, values[mask].mean()), rtol=1e-6)


def test_no_retracing_across_steps():
  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(z, y, v, key):
    return zipfls_jax.zipf_label_smoothing_loss(z, y, votes=v, distribution="random_uniform",
                                                key=key).mean()
  for i in range(3):
    logits, labels, votes = _problem(4, 10, 5, seed=i)
    assert np.isfinite(step(logits, labels, votes, jax.random.key(i)))


# --- errors -----------------------------------------------------------------

def test_out_of_range_labels_give_nan_and_checkify_catches_them():
  logits, _, votes = _problem(3, 5, 4)
  labels = jnp.array([0, 7, 2])
  loss = zipfls_jax.zipf_label_smoothing_loss(logits, labels, votes=votes)
  loss = np.asarray(loss)
  assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2]]))
  terms = zipfls_jax.zipf_label_smoothing_terms(logits, labels)
  assert np.isnan(terms.ce[1]) and np.isnan(terms.kl[1])

  def checked(z, y):
    zipfls_jax.check_labels(y, z.shape[-1])
    return zipfls_jax.zipf_label_smoothing_loss(z, y)
  err, _ = jax.jit(checkify.checkify(checked))(logits, labels)
  with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 5\)"):
    err.throw()
  err, _ = jax.jit(checkify.checkify(checked))(logits, jnp.array([0, 4, 2]))
  assert err.get() is None


@pytest.mark.parametrize("args,kw,error,match", [
    ((np.ones((4, 5), np.float32), np.zeros((4, 1), np.int32)), {}, ValueError, "labels"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.float32)), {}, TypeError, "labels"),
    ((np.ones((4, 5), np.int32), np.zeros(4, np.int32)), {}, TypeError, "logits"),
    ((np.ones((4, 1), np.float32), np.zeros(4, np.int32)), {}, ValueError, "C >= 2"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"votes": np.zeros((3, 2), np.int32)}, ValueError, "votes"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"votes": np.zeros((4, 2), np.float32)}, TypeError, "votes"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)), {"power": 0.0}, ValueError, "power"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"distribution": "zipff"}, ValueError, "distribution"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"distribution": "random_pareto"}, ValueError, "key"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"distribution": "linear_decay", "smallest_prob": 0.3}, ValueError, "smallest_prob"),
    ((np.ones((4, 5), np.float32), np.zeros(4, np.int32)),
     {"where": np.ones(3, bool)}, ValueError, "where"),
])
def test_bad_input_raises_at_trace_time(args, kw, error, match):
  with pytest.raises(error, match=match):
    jax.jit(lambda *a: zipfls_jax.zipf_label_smoothing_loss(*a, **kw))(*args)


def test_bad_eps_and_targets_shape():
  z, y = np.ones((2, 3), np.float32), np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="eps"):
    zipfls_jax.label_smoothing_loss(z, y, eps=1.5)
  with pytest.raises(ValueError, match="targets"):
    zipfls_jax.zipf_loss(z, y, np.ones((2, 4), np.float32))
