"""Losses against the NumPy reference; gradients; jit/vmap/pmap/shard_map; errors.

Everything runs under `jax.jit` (a first eager call of a shape costs several
times a compile), except the one test that compares eager with jitted.
"""
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
from zipfls_jax import TargetDistribution, targets
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


def _reference_grad(logits, labels, q, lam):
  """d/dz [CE + lam KL] = softmax(z) - onehot(y) + lam [j != y] (softmax_{j != y}(z) - q)."""
  z = np.asarray(logits, np.float64)
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = p.copy()
  want[np.arange(len(z)), labels] -= 1
  for i in range(len(z)):
    keep = np.arange(z.shape[1]) != labels[i]
    e = np.exp(z[i, keep] - z[i, keep].max())
    want[i, keep] += lam * (e / e.sum() - q[i, keep])
  return want


@functools.partial(jax.jit, static_argnames=("rank_by", "distribution"))
def _terms(logits, labels, votes=None, key=None, *, rank_by="votes", distribution="zipf"):
  return zipfls_jax.zipf_label_smoothing_terms(logits, labels, votes=votes, rank_by=rank_by,
                                               distribution=distribution, key=key)


@functools.partial(jax.jit, static_argnames=("rank_by", "distribution", "lam"))
def _loss(logits, labels, votes=None, key=None, where=None, *, rank_by="votes",
          distribution="zipf", lam=zipfls_jax.DEFAULT_LAM):
  return zipfls_jax.zipf_label_smoothing_loss(logits, labels, votes=votes, rank_by=rank_by,
                                              lam=lam, distribution=distribution, key=key,
                                              where=where)


@functools.partial(jax.jit, static_argnames=("rank_by", "distribution", "lam"))
def _loss_and_grad(logits, labels, votes=None, key=None, *, rank_by="votes", distribution="zipf",
                   lam=zipfls_jax.DEFAULT_LAM):
  return jax.value_and_grad(lambda z: zipfls_jax.zipf_label_smoothing_loss(
      z, labels, votes=votes, rank_by=rank_by, lam=lam, distribution=distribution,
      key=key).sum())(logits)


@pytest.mark.parametrize("n,c,k", [(7, 2, 5), (9, 10, 16), (16, 100, 64), (4, 10000, 49)])
@pytest.mark.parametrize("rank_by", ["votes", "logits"])
def test_terms_match_reference(n, c, k, rank_by):
  logits, labels, votes = _problem(n, c, k, seed=c)
  if rank_by == "votes":
    labels[: n // 2] = votes[: n // 2, 0]   # half the labels voted, half not
  else:
    logits = np.round(logits)                # ties among logits
    votes = None
  terms = _terms(logits, labels, votes, rank_by=rank_by)
  ce, kl = _reference_terms(logits, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-4, atol=1e-5)
  # Correct: no class scores strictly higher than the label (ties count for it).
  label_logit = logits[np.arange(n), labels]
  np.testing.assert_array_equal(terms.correct, (logits > label_logit[:, None]).sum(-1) == 0)


class JitAndEagerTest(chex.TestCase):
  """The same values traced and run op by op."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_loss_matches_reference(self):
    logits, labels, votes = _problem(6, 30, 12, seed=17)
    loss = self.variant(lambda z, y, v: zipfls_jax.zipf_label_smoothing_loss(
        z, y, votes=v, lam=0.1))(logits, labels, votes)
    ce, kl = _reference_terms(logits, labels, votes)
    np.testing.assert_allclose(loss, ce + 0.1 * kl, rtol=1e-5)


# --- every distribution x every kind of vote row ----------------------------

C, K = 6, 9
RANKED = [
    TargetDistribution("zipf", power=1.7),
    TargetDistribution("constant"),
    TargetDistribution("linear_decay", smallest_prob=0.0),
    TargetDistribution("linear_decay", smallest_prob=0.1),
    TargetDistribution("exponential_decay", decay=0.5),
    TargetDistribution("unbiased_zipf"),
    TargetDistribution("unbiased_zipf", power=2.0, lower_bound=2.0, upper_bound=20.0),
]


def _vote_rows():
  """Rows of (label, votes) covering every kind of vote list, label voted or not."""
  ignored = [-1, C, C + 7]
  rows = [
      (0, [-1] * K),                                  # no vote at all
      (3, [C] * K),                                   # no vote in range
      (1, [0, 0, 2, 2, 2, 5, 0, 2, 0]),               # some votes, label unvoted
      (2, [0, 0, 2, 2, 2, 5, 0, 2, 0]),               # some votes, label voted
      (4, [0, 1, 2, 3, 4, 5, 5, 1, 1]),               # every class voted
      (5, [5, 4, 3, 2, 1, 0, 0, 0, 0]),               # every class voted, label last
      (0, [1, 2, 3, 4, 5, 5, 4, -1, C]),              # every class but the label voted
      (3, [1, -1, 1, C, 4, C + 7, -1, 4, 1]),         # valid and ignored ids mixed
      (1, [1, 1, -1, -1, C, C, 0, 0, 2]),             # ignored ids, label voted
      (2, [5] + ignored * 2 + [5, 5]),                # one voted class amid ignored ids
  ]
  labels = np.array([y for y, _ in rows], np.int32)
  votes = np.array([v for _, v in rows], np.int32)
  return labels, votes


def _dist_kw(dist):
  kw = {f: getattr(dist, f) for f in ("power", "smallest_prob", "decay", "lower_bound",
                                      "upper_bound")}
  return dist.name, kw


@pytest.mark.parametrize("dist", RANKED, ids=lambda d: f"{d.name}-{d.power}-{d.smallest_prob}")
def test_every_ranked_distribution_and_vote_row_matches_reference(dist):
  labels, votes = _vote_rows()
  logits = np.random.default_rng(3).normal(size=(len(labels), C)).astype(np.float32) * 2
  lam = 0.3
  name, kw = _dist_kw(dist)
  q = reference.targets(reference.counts(votes, C), labels, name, **kw)
  terms = _terms(logits, labels, votes, distribution=dist)
  np.testing.assert_allclose(terms.ce, reference.cross_entropy(logits, labels), rtol=1e-5)
  np.testing.assert_allclose(terms.kl, reference.kl_non_target(logits, labels, q), rtol=1e-4,
                             atol=1e-6)
  value, grad = _loss_and_grad(logits, labels, votes, distribution=dist, lam=lam)
  assert np.isfinite(value)
  np.testing.assert_allclose(grad, _reference_grad(logits, labels, q, lam), rtol=1e-4,
                             atol=1e-6)
  # The dense route (counts, then zipf_targets) agrees with the fused vote path.
  dense = jax.jit(lambda s, y: zipfls_jax.zipf_targets(s, y, distribution=dist))(
      reference.counts(votes, C), labels)
  np.testing.assert_allclose(dense, q, rtol=1e-5, atol=1e-7)
  # Logit ranking (ties included) for the same distribution.
  tied = np.round(logits)
  q_logits = reference.targets(tied, labels, name, **kw)
  value, grad = _loss_and_grad(tied, labels, rank_by="logits", distribution=dist, lam=lam)
  np.testing.assert_allclose(
      value, (reference.cross_entropy(tied, labels)
              + lam * reference.kl_non_target(tied, labels, q_logits)).sum(), rtol=1e-5)
  np.testing.assert_allclose(grad, _reference_grad(tied, labels, q_logits, lam), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.parametrize("name", targets.RANDOM_DISTRIBUTIONS)
def test_random_distributions_with_votes_use_the_dense_targets(name):
  labels, votes = _vote_rows()
  logits = np.random.default_rng(1).normal(size=(len(labels), C)).astype(np.float32)
  key = jax.random.key(7)
  got = _terms(logits, labels, votes, key, distribution=name).kl
  q = zipfls_jax.zipf_targets(zipfls_jax.vote_counts(votes, C), labels, distribution=name,
                              key=key)
  np.testing.assert_allclose(got, reference.kl_non_target(logits, labels, np.asarray(q)),
                             rtol=1e-4, atol=1e-6)
  value, grad = _loss_and_grad(logits, labels, votes, key, distribution=name)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_larger_vote_problem_matches_reference():
  logits, labels, votes = _problem(12, 200, 32, seed=3, num_voted=20)
  labels[:6] = votes[:6, 3]
  for dist in (RANKED[0], TargetDistribution("linear_decay", smallest_prob=0.004),
               RANKED[6]):
    name, kw = _dist_kw(dist)
    np.testing.assert_allclose(_terms(logits, labels, votes, distribution=dist).kl,
                               _reference_terms(logits, labels, votes, name, **kw)[1],
                               rtol=1e-4, atol=1e-5)


def test_linear_decay_limit_falls_back_to_uniform():
  # C = 2, smallest_prob 0: the only non-target class has weight 0 if it ranks last.
  labels = jnp.array([0])
  kl = _terms(jnp.array([[1.0, -1.0]]), labels, jnp.array([[0, 0]]),
              distribution="linear_decay").kl
  q = zipfls_jax.zipf_targets(jnp.array([[2, 0]]), labels, distribution="linear_decay")
  np.testing.assert_allclose(q, [[0.0, 1.0]])
  np.testing.assert_allclose(kl, 0.0, atol=1e-6)   # one non-target class: KL is 0


# --- numerics ---------------------------------------------------------------

def test_bf16_logits_computed_in_f32():
  logits, labels, votes = _problem(8, 100, 16, seed=4)
  bf16 = jnp.asarray(logits, jnp.bfloat16)
  terms = _terms(bf16, labels, votes)
  assert terms.kl.dtype == jnp.float32 and terms.ce.dtype == jnp.float32
  rounded = np.asarray(bf16.astype(jnp.float32))
  ce, kl = _reference_terms(rounded, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank_by", ["votes", "logits"])
def test_huge_logits_stay_finite_and_exact(rank_by):
  logits, labels, votes = _problem(8, 1000, 49, seed=5, scale=1e4)
  logits = np.clip(logits, -1e4, 1e4)
  logits[0, labels[0]] = 1e4             # dominant target
  logits[1, :] = -1e4
  votes = votes if rank_by == "votes" else None
  value, grad = _loss_and_grad(logits, labels, votes, rank_by=rank_by)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  terms = _terms(logits, labels, votes, rank_by=rank_by)
  ce, kl = _reference_terms(logits, labels, votes)
  np.testing.assert_allclose(terms.ce, ce, rtol=1e-5, atol=1e-2)
  np.testing.assert_allclose(terms.kl, kl, rtol=1e-5, atol=1e-2)


def test_kl_is_never_negative_even_when_exactly_zero():
  # C = 2 with logits +-1e4: one non-target class, so KL is exactly 0 whatever
  # the logits; subtracting the label's term (2e4) from a sum over all classes
  # once gave -2.5e-4.
  logits = jnp.array([[1e4, -1e4], [1e4, -1e4], [-1e4, 1e4], [3e3, -7e3]])
  labels = jnp.array([0, 1, 0, 1])
  for votes, rank_by in ((jnp.array([[0, 0], [1, 1], [0, 1], [1, 0]]), "votes"),
                         (None, "logits")):
    for dist in ("zipf", "unbiased_zipf", "linear_decay"):
      kl = np.asarray(_terms(logits, labels, votes, rank_by=rank_by, distribution=dist).kl)
      assert np.all(kl >= 0.0), kl
      np.testing.assert_allclose(kl, 0.0, atol=1e-6)
  # Logits equal to log q (plus a shift): p = q and KL = 0, reached from both
  # sides by rounding; never below.
  rng = np.random.default_rng(0)
  labels, votes = _vote_rows()
  q = reference.targets(reference.counts(votes, C), labels)
  shift = rng.normal(size=(len(labels), 1)) * 50
  logits = np.where(q > 0, np.log(np.maximum(q, 1e-30)), 0.0) + shift
  logits[np.arange(len(labels)), labels] = rng.normal(size=len(labels)) * 1e3
  kl = np.asarray(_terms(logits.astype(np.float32), labels, votes).kl)
  assert np.all(kl >= 0.0), kl
  np.testing.assert_allclose(kl, 0.0, atol=1e-5)


@pytest.mark.parametrize("rank_by", ["votes", "logits"])
def test_gradients_numerically_and_against_the_formula(rank_by):
  logits, labels, votes = _problem(4, 12, 9, seed=6, scale=1.0)
  votes = votes if rank_by == "votes" else None
  lam = 0.3
  loss = jax.jit(lambda z: zipfls_jax.zipf_label_smoothing_loss(
      z, labels, votes=votes, rank_by=rank_by, lam=lam).sum())
  check_grads(loss, (jnp.asarray(logits),), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
  grad = jax.jit(jax.grad(loss))(jnp.asarray(logits))
  scores = logits if votes is None else reference.counts(votes, 12)
  np.testing.assert_allclose(grad, _reference_grad(logits, labels,
                                                   reference.targets(scores, labels), lam),
                             rtol=1e-4, atol=1e-6)


def test_kl_term_gives_target_logit_no_gradient():
  logits, labels, votes = _problem(6, 20, 10, seed=8)
  grad = jax.jit(jax.grad(lambda z: zipfls_jax.zipf_label_smoothing_terms(
      z, labels, votes=votes).kl.sum()))(jnp.asarray(logits))
  np.testing.assert_array_equal(np.asarray(grad)[np.arange(6), labels], 0.0)
  q = zipfls_jax.zipf_targets(logits, labels)
  grad_q = jax.jit(jax.grad(lambda t: zipfls_jax.zipf_loss(logits, labels, targets=t).sum()))(q)
  np.testing.assert_array_equal(grad_q, 0.0)


def test_zipf_loss_with_dense_targets_matches_reference():
  logits, labels, votes = _problem(10, 50, 20, seed=9)
  q = reference.targets(reference.counts(votes, 50), labels)
  # Called with the README's keyword `targets`.
  got = jax.jit(lambda z, y, t: zipfls_jax.zipf_loss(z, y, targets=t))(
      logits, labels, q.astype(np.float32))
  np.testing.assert_allclose(got, reference.kl_non_target(logits, labels, q), rtol=1e-4,
                             atol=1e-6)


# --- where= -----------------------------------------------------------------

def _where_problem():
  logits, labels, votes = _problem(10, 30, 8, seed=10)
  where = np.arange(10) % 3 != 0
  labels = np.where(where, labels, -1)             # padding rows: label -1 ...
  logits = np.where(where[:, None], logits, np.nan).astype(np.float32)   # ... garbage logits
  q = np.asarray(zipfls_jax.zipf_targets(np.nan_to_num(logits), np.maximum(labels, 0)))
  q = np.where(where[:, None], q, np.nan).astype(np.float32)
  return logits, labels, votes, q, where


WHERE_LOSSES = {
    "zipf_label_smoothing_loss": lambda z, y, v, q, w: zipfls_jax.zipf_label_smoothing_loss(
        z, y, votes=v, lam=0.3, where=w),
    "zipf_label_smoothing_terms": lambda z, y, v, q, w: sum(
        zipfls_jax.zipf_label_smoothing_terms(z, y, votes=v, where=w)[:2]),
    "logit_rank": lambda z, y, v, q, w: zipfls_jax.zipf_label_smoothing_loss(
        z, y, rank_by="logits", where=w),
    "zipf_loss": lambda z, y, v, q, w: zipfls_jax.zipf_loss(z, y, targets=q, where=w),
    "label_smoothing_loss": lambda z, y, v, q, w: zipfls_jax.label_smoothing_loss(
        z, y, eps=0.1, where=w),
    "label_smooth_zipf_loss": lambda z, y, v, q, w: zipfls_jax.label_smooth_zipf_loss(
        z, y, targets=q, eps=0.2, where=w),
}


@pytest.mark.parametrize("name", WHERE_LOSSES)
def test_where_equals_boolean_indexing_in_value_and_gradient(name):
  fn = WHERE_LOSSES[name]
  logits, labels, votes, q, where = _where_problem()
  value_and_grad = jax.jit(lambda z, y, v, q, w: jax.value_and_grad(
      lambda z: fn(z, y, v, q, w).sum())(z), static_argnums=())
  masked = jax.jit(fn)(logits, labels, votes, q, where)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  kept = jax.jit(lambda z, y, v, q: fn(z, y, v, q, None))(
      logits[where], labels[where], votes[where], q[where])
  np.testing.assert_allclose(np.asarray(masked)[where], kept, rtol=1e-6)
  # The masked rows (label -1, NaN logits) get a zero gradient, not NaN, and
  # the kept rows the gradient they get alone.
  value, grad = value_and_grad(logits, labels, votes, q, where)
  _, kept_grad = value_and_grad(logits[where], labels[where], votes[where], q[where],
                                np.ones(where.sum(), bool))
  assert np.isfinite(value)
  np.testing.assert_array_equal(np.asarray(grad)[~where], 0.0)
  np.testing.assert_allclose(np.asarray(grad)[where], kept_grad, rtol=1e-5, atol=1e-7)


def test_where_masks_the_correct_flags():
  logits, labels, votes, _, where = _where_problem()
  terms = jax.jit(lambda z, y, v, w: zipfls_jax.zipf_label_smoothing_terms(
      z, y, votes=v, where=w))(logits, labels, votes, where)
  assert not np.any(np.asarray(terms.correct)[~where])


# --- the other losses ---------------------------------------------------------

def test_loss_is_ce_plus_lambda_kl():
  logits, labels, votes = _problem(5, 40, 16, seed=11)
  ce, kl = _reference_terms(logits, labels, votes)
  np.testing.assert_allclose(_loss(logits, labels, votes, lam=0.1), ce + 0.1 * kl, rtol=1e-5)
  # lam has one default, stated once.
  np.testing.assert_allclose(_loss(logits, labels, votes),
                             ce + zipfls_jax.DEFAULT_LAM * kl, rtol=1e-5)


def test_label_smoothing_authors_form():
  logits, labels, _ = _problem(6, 10, 1, seed=12)
  got = jax.jit(functools.partial(zipfls_jax.label_smoothing_loss, eps=0.1))(logits, labels)
  uniform = np.full((6, 10), 1 / 9)
  np.testing.assert_allclose(got, reference.smoothed_cross_entropy(logits, labels, uniform, 0.1),
                             rtol=1e-5)
  # Hand case: C = 2, eps = 0.2, logits 0: loss = log 2 whatever the split.
  np.testing.assert_allclose(
      jax.jit(functools.partial(zipfls_jax.label_smoothing_loss, eps=0.2))(
          jnp.zeros((1, 2)), jnp.array([1])), [np.log(2)], rtol=1e-6)


def test_label_smooth_zipf():
  logits, labels, votes = _problem(6, 25, 12, seed=13)
  q = zipfls_jax.zipf_targets(zipfls_jax.vote_counts(votes, 25), labels)
  got = jax.jit(lambda z, y, t: zipfls_jax.label_smooth_zipf_loss(z, y, targets=t, eps=0.3))(
      logits, labels, q)
  want = reference.smoothed_cross_entropy(logits, labels, reference.targets(
      reference.counts(votes, 25), labels), 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_masked_batch_mean():
  values = jnp.array([1.0, 2.0, 3.0, 4.0])
  fn = jax.jit(zipfls_jax.masked_batch_mean)
  np.testing.assert_allclose(fn(values, jnp.array([1, 0, 1, 0]) > 0), 2.0)
  np.testing.assert_allclose(fn(values, jnp.zeros(4, bool)), 0.0)


# --- transformations over 8 fake CPU devices ---------------------------------

def _zipf(z, y, v):
  return zipfls_jax.zipf_label_smoothing_loss(z, y, votes=v, lam=0.1)


def test_vmap_matches_batch():
  logits, labels, votes = _problem(8, 20, 6, seed=14)
  batched = jax.jit(_zipf)(logits, labels, votes)
  mapped = jax.jit(jax.vmap(lambda z, y, v: _zipf(z[None], y[None], v[None])[0]))(
      logits, labels, votes)
  np.testing.assert_allclose(mapped, batched, rtol=1e-6)
  # Per-example inputs (no batch axis) work too: leading axes are free.
  np.testing.assert_allclose(jax.jit(jax.vmap(_zipf))(logits, labels, votes), batched,
                             rtol=1e-6)


def test_pmap_and_shard_map_match_single_device():
  assert jax.device_count() == 8
  logits, labels, votes = _problem(16, 30, 8, seed=15)
  want = np.asarray(jax.jit(_zipf)(logits, labels, votes))
  shaped = [x.reshape(8, 2, *x.shape[1:]) for x in (logits, labels, votes)]
  np.testing.assert_allclose(jax.pmap(_zipf)(*shaped).reshape(-1), want, rtol=1e-6)

  mesh = jax.make_mesh((8,), ("data",))
  sharded = jax.jit(jax.shard_map(_zipf, mesh=mesh, in_specs=P("data"), out_specs=P("data")))
  inputs = jax.device_put((logits, labels, votes), jax.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(sharded(*inputs), want, rtol=1e-6)
  # Plain jit over sharded global arrays (explicit and auto axes), value and grad.
  grad_fn = jax.jit(jax.grad(lambda z, y, v: _zipf(z, y, v).sum()))
  want_grad = grad_fn(logits, labels, votes)
  auto = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  for m in (mesh, auto):
    inputs = jax.device_put((logits, labels, votes), jax.NamedSharding(m, P("data")))
    np.testing.assert_allclose(jax.jit(_zipf)(*inputs), want, rtol=1e-6)
    np.testing.assert_allclose(grad_fn(*inputs), want_grad, rtol=1e-5, atol=1e-7)


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
  loss = np.asarray(_loss(logits, labels, votes))
  assert np.isnan(loss[1]) and np.all(np.isfinite(loss[[0, 2]]))
  terms = _terms(logits, labels, rank_by="logits")
  assert np.isnan(terms.ce[1]) and np.isnan(terms.kl[1]) and not terms.correct[1]

  def checked(z, y, v):
    zipfls_jax.check_labels(y, z.shape[-1])
    return zipfls_jax.zipf_label_smoothing_loss(z, y, votes=v)
  err, _ = jax.jit(checkify.checkify(checked))(logits, labels, votes)
  with pytest.raises(checkify.JaxRuntimeError, match=r"\[0, 5\)"):
    err.throw()
  err, _ = jax.jit(checkify.checkify(checked))(logits, jnp.array([0, 4, 2]), votes)
  assert err.get() is None


def test_vote_ids_out_of_range_are_ignored_and_checkify_catches_them():
  logits, labels, votes = _problem(3, 5, 4)
  padded = np.concatenate([votes, np.array([[-1, 5], [9, -1], [-1, -1]], np.int32)], 1)
  np.testing.assert_allclose(_loss(logits, labels, padded), _loss(logits, labels, votes),
                             rtol=1e-6)

  def checked(z, y, v):
    zipfls_jax.check_votes(v, z.shape[-1])
    return zipfls_jax.zipf_label_smoothing_loss(z, y, votes=v)
  err, _ = jax.jit(checkify.checkify(checked))(logits, labels, padded)
  with pytest.raises(checkify.JaxRuntimeError, match=r"vote ids must lie in \[0, 5\)"):
    err.throw()
  err, _ = jax.jit(checkify.checkify(checked))(logits, labels, votes)
  assert err.get() is None


ONES, ZEROS = np.ones((4, 5), np.float32), np.zeros(4, np.int32)
VOTES = {"votes": np.zeros((4, 2), np.int32)}


@pytest.mark.parametrize("args,kw,error,match", [
    ((ONES, np.zeros((4, 1), np.int32)), VOTES, ValueError, "labels"),
    ((ONES, np.zeros(4, np.float32)), VOTES, TypeError, "labels"),
    ((np.ones((4, 5), np.int32), ZEROS), VOTES, TypeError, "logits"),
    ((np.ones((4, 1), np.float32), ZEROS), VOTES, ValueError, "C >= 2"),
    ((ONES, ZEROS), {"votes": np.zeros((3, 2), np.int32)}, ValueError, "votes"),
    ((ONES, ZEROS), {"votes": np.zeros((4, 2), np.float32)}, TypeError, "votes"),
    ((ONES, ZEROS), {**VOTES, "distribution": "zipff"}, ValueError, "distribution"),
    ((ONES, ZEROS), {**VOTES, "distribution": 3}, TypeError, "distribution"),
    ((ONES, ZEROS), {**VOTES, "distribution": "random_pareto"}, ValueError, "key"),
    ((ONES, ZEROS), {**VOTES, "distribution": TargetDistribution(
        "linear_decay", smallest_prob=0.3)}, ValueError, "smallest_prob"),
    ((ONES, ZEROS), {**VOTES, "where": np.ones(3, bool)}, ValueError, "where"),
    # Forgetting the votes must not silently rank the logits (another method).
    ((ONES, ZEROS), {}, ValueError, "rank_by='logits'"),
    ((ONES, ZEROS), {"votes": None}, ValueError, "votes=True"),
    ((ONES, ZEROS), {**VOTES, "rank_by": "logits"}, ValueError, "takes no `votes`"),
    ((ONES, ZEROS), {"rank_by": "logit"}, ValueError, "`rank_by` must be one of"),
    # An unknown option names the function called, not an internal one.
    ((ONES, ZEROS), {**VOTES, "power": 2.0}, TypeError, "zipf_label_smoothing_loss"),
    # One-hot labels, and logits with an extra axis: the message says the fix.
    ((ONES, np.eye(4, 5, dtype=np.float32)), VOTES, ValueError,
     r"one-hot.*jnp.argmax\(onehot, axis=-1\)"),
    ((ONES[:, None], ZEROS), VOTES, ValueError, r"extra axis of size 1: pass logits of "
                                                r"shape \(4, 5\)"),
])
def test_bad_input_raises_at_trace_time(args, kw, error, match):
  with pytest.raises(error, match=match):
    jax.jit(lambda *a: zipfls_jax.zipf_label_smoothing_loss(*a, **kw))(*args)


def test_bad_eps_and_targets_shape():
  z, y = np.ones((2, 3), np.float32), np.zeros(2, np.int32)
  with pytest.raises(ValueError, match="eps"):
    zipfls_jax.label_smoothing_loss(z, y, eps=1.5)
  with pytest.raises(ValueError, match="eps"):
    zipfls_jax.label_smoothing_loss(z, y, eps=float("nan"))
  with pytest.raises(ValueError, match="targets"):
    zipfls_jax.zipf_loss(z, y, targets=np.ones((2, 4), np.float32))
  with pytest.raises(TypeError, match="label_smooth_zipf_loss"):
    zipfls_jax.label_smooth_zipf_loss(z, y, targets_=z, eps=0.1)   # the old name
