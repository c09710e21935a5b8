"""zipf_targets for every distribution against the NumPy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zipfls_jax
from zipfls_jax import targets
from tests import reference

RANKED = [
    ("zipf", {}),
    ("zipf", {"power": 2.5}),
    ("constant", {}),
    ("linear_decay", {"smallest_prob": 0.0}),
    ("linear_decay", {"smallest_prob": 0.01}),
    ("exponential_decay", {"decay": 0.3}),
    ("unbiased_zipf", {}),
    ("unbiased_zipf", {"power": 0.5, "lower_bound": 0.5, "upper_bound": 40.0}),
]


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("name,kw", RANKED)
def test_ranked_distributions_match_reference(name, kw, num_classes):
  rng = np.random.default_rng(num_classes)
  scores = rng.integers(0, 5, size=(6, num_classes)).astype(np.float32)  # many ties
  labels = rng.integers(0, num_classes, size=6)
  dist = zipfls_jax.TargetDistribution(name, **kw)
  fn = jax.jit(lambda s, y: zipfls_jax.zipf_targets(s, y, distribution=dist))
  got = fn(scores, labels)
  want = reference.targets(scores, labels, name, **kw)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)


def test_zipf_hand_computed():
  # ranks [1, 4, 2, 3], label 0 masked: d = [., 1/4, 1/2, 1/3] / (13/12).
  got = zipfls_jax.zipf_targets(jnp.array([[3.0, 0.0, 2.0, 1.0]]), jnp.array([0]))
  np.testing.assert_allclose(got, [[0.0, 3 / 13, 6 / 13, 4 / 13]], rtol=1e-6)


def test_unvoted_classes_share_one_rank():
  # Votes for classes 0 (x3) and 2 (x1) of 6: the 4 unvoted share rank 3.
  counts = jnp.array([[3, 0, 1, 0, 0, 0]])
  got = zipfls_jax.zipf_targets(counts, jnp.array([0]))
  d = np.array([0, 1 / 3, 1 / 2, 1 / 3, 1 / 3, 1 / 3])
  np.testing.assert_allclose(got[0], d / d.sum(), rtol=1e-6)


def test_integer_vote_counts_accepted_and_rows_sum_to_one():
  rng = np.random.default_rng(1)
  counts = rng.integers(0, 3, size=(8, 10000))
  labels = rng.integers(0, 10000, size=8)
  q = jax.jit(zipfls_jax.zipf_targets)(counts, labels)
  np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
  assert np.all(np.asarray(q)[np.arange(8), labels] == 0)
  np.testing.assert_allclose(q, reference.targets(counts, labels), rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("name", targets.RANDOM_DISTRIBUTIONS)
def test_random_distributions_are_fresh_masked_and_normalised(name):
  scores = jnp.tile(jnp.arange(50.0), (4, 1))
  labels = jnp.array([0, 5, 10, 49])
  fn = jax.jit(lambda s, y, k: zipfls_jax.zipf_targets(s, y, distribution=name, key=k))
  a = fn(scores, labels, jax.random.key(0))
  b = fn(scores, labels, jax.random.key(1))
  assert not np.allclose(a, b)
  np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(a)[np.arange(4), labels], 0.0)
  assert np.all(np.asarray(a) >= 0)


def test_sorted_pareto_gives_better_ranks_larger_weights():
  scores = jnp.array([[5.0, 1.0, 4.0, 2.0, 3.0, 0.0, 3.0]])
  q = zipfls_jax.zipf_targets(scores, jnp.array([5]), distribution="sorted_pareto",
                              key=jax.random.key(3))[0]
  order = np.argsort(-np.asarray(scores[0]), kind="stable")   # 0, 2, 4, 6, 3, 1, 5
  weights = np.asarray(q)[order[:-1]]                          # drop the label (class 5)
  assert np.all(np.diff(weights) <= 0)
  assert q[4] == q[6]   # tied classes share the weight of their min rank


def test_targets_carry_no_gradient():
  grad = jax.grad(lambda s: zipfls_jax.zipf_targets(s, jnp.array([1]))[0, 0])(
      jnp.array([[1.0, 2.0, 3.0]]))
  np.testing.assert_array_equal(grad, 0.0)


NAN = float("nan")


@pytest.mark.parametrize("kw,error,match", [
    ({"name": "gauss"}, ValueError, "distribution"),
    ({"power": 0.0}, ValueError, "power"),
    ({"power": -1.0}, ValueError, "power"),
    ({"power": NAN}, ValueError, "power"),
    ({"power": jnp.ones(())}, TypeError, "power"),
    ({"power": "1"}, TypeError, "power"),
    ({"smallest_prob": -0.1}, ValueError, "smallest_prob"),
    ({"smallest_prob": NAN}, ValueError, "smallest_prob"),
    ({"decay": 0.0}, ValueError, "decay"),
    ({"decay": NAN}, ValueError, "decay"),
    ({"lower_bound": 0.0}, ValueError, "lower_bound"),
    ({"upper_bound": 1.0}, ValueError, "upper_bound"),
    ({"upper_bound": NAN}, ValueError, "upper_bound"),
])
def test_target_distribution_checks_every_value_once(kw, error, match):
  with pytest.raises(error, match=match):
    zipfls_jax.TargetDistribution(**kw)


@pytest.mark.parametrize("kw,match", [
    ({"distribution": "gauss"}, "distribution"),
    ({"distribution": "random_uniform"}, "key"),
    ({"distribution": zipfls_jax.TargetDistribution("linear_decay", smallest_prob=0.5)},
     "smallest_prob"),
])
def test_bad_parameters_raise_naming_the_argument(kw, match):
  with pytest.raises(ValueError, match=match):
    zipfls_jax.zipf_targets(jnp.ones((2, 4)), jnp.array([0, 1]), **kw)


def test_a_name_is_the_distribution_with_its_defaults():
  scores, labels = jnp.array([[3.0, 0.0, 2.0, 1.0, 2.0]]), jnp.array([1])
  fn = jax.jit(zipfls_jax.zipf_targets, static_argnames="distribution")
  for name in targets.RANK_DISTRIBUTIONS:
    np.testing.assert_array_equal(
        fn(scores, labels, distribution=name),
        fn(scores, labels, distribution=zipfls_jax.TargetDistribution(name)))
  with pytest.raises(TypeError, match="distribution"):
    zipfls_jax.zipf_targets(scores, labels, distribution=("zipf", 2.0))


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="labels"):
    zipfls_jax.zipf_targets(jnp.ones((2, 4)), jnp.array([0, 1, 2]))
  with pytest.raises(TypeError, match="labels"):
    zipfls_jax.zipf_targets(jnp.ones((2, 4)), jnp.array([0.0, 1.0]))
  with pytest.raises(ValueError, match="C >= 2"):
    zipfls_jax.zipf_targets(jnp.ones((2, 1)), jnp.array([0, 0]))
