"""rank_min / rank_max / vote_counts / vote_statistics against SciPy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import zipfls_jax
from zipfls_jax import ranks
from tests import reference


@pytest.mark.parametrize("num_classes", [2, 3, 17, 1000])
def test_rank_min_matches_scipy_with_many_ties(num_classes):
  rng = np.random.default_rng(num_classes)
  scores = rng.integers(0, 4, size=(5, num_classes)).astype(np.float32)
  got = jax.jit(zipfls_jax.rank_min)(scores)
  np.testing.assert_array_equal(got, reference.ranks_min(scores))
  got_max = jax.jit(zipfls_jax.rank_max)(scores)
  np.testing.assert_array_equal(got_max, stats.rankdata(-scores, method="max", axis=-1))


def test_rank_min_hand_case_and_batch_axes():
  scores = jnp.array([[[3, 0, 3, 1]], [[0, 0, 0, 0]]])
  np.testing.assert_array_equal(zipfls_jax.rank_min(scores),
                                [[[1, 4, 1, 3]], [[1, 1, 1, 1]]])


def test_vote_counts_matches_loop_and_drops_out_of_range():
  rng = np.random.default_rng(0)
  votes = rng.integers(0, 7, size=(4, 20))
  np.testing.assert_array_equal(jax.jit(zipfls_jax.vote_counts, static_argnums=1)(votes, 7),
                                reference.counts(votes, 7))
  np.testing.assert_array_equal(zipfls_jax.vote_counts(jnp.array([[0, 9, -1]]), 3), [[1, 0, 0]])


@pytest.mark.parametrize("num_classes,k", [(5, 16), (100, 64), (10000, 49)])
def test_vote_statistics_equal_dense_ranks(num_classes, k):
  rng = np.random.default_rng(k)
  votes = rng.integers(0, min(num_classes, 6), size=(6, k))
  stats_ = jax.jit(ranks.vote_statistics, static_argnums=1)(votes, num_classes)
  dense = reference.counts(votes, num_classes)
  r_min = reference.ranks_min(dense)
  r_max = stats.rankdata(-dense, method="max", axis=-1)
  rows = np.arange(6)[:, None]
  np.testing.assert_array_equal(stats_.rank, r_min[rows, votes])
  np.testing.assert_array_equal(stats_.group_size, (r_max - r_min + 1)[rows, votes])
  np.testing.assert_array_equal(stats_.count, dense[rows, votes])
  num_voted = (dense > 0).sum(-1)
  np.testing.assert_array_equal(stats_.num_voted, num_voted)
  np.testing.assert_allclose(stats_.share.sum(-1), num_voted, rtol=1e-6)
  unvoted = r_min[dense == 0].reshape(-1) if (dense == 0).any() else None
  if unvoted is not None:
    expected = np.repeat(num_voted + 1, (dense == 0).sum(-1))
    np.testing.assert_array_equal(unvoted, expected)


def test_rank_errors_name_the_argument():
  with pytest.raises(ValueError, match="scores"):
    zipfls_jax.rank_min(jnp.ones((3, 1)))
  with pytest.raises(TypeError, match="class_ids"):
    zipfls_jax.vote_counts(jnp.ones((3, 2)), 4)
  with pytest.raises(ValueError, match="num_classes"):
    zipfls_jax.vote_counts(jnp.ones((3, 2), jnp.int32), 1)


def test_vote_statistics_ignore_out_of_range_ids():
  stats_ = ranks.vote_statistics(jnp.array([[1, 1, 7, -2, 0]]), 4)
  np.testing.assert_array_equal(stats_.count, [[2, 2, 0, 0, 1]])
  np.testing.assert_array_equal(stats_.share, [[0.5, 0.5, 0, 0, 1]])
  np.testing.assert_array_equal(stats_.rank[0, [0, 1, 4]], [1, 1, 2])
  np.testing.assert_array_equal(stats_.num_voted, [2])
  np.testing.assert_array_equal(stats_.unvoted_rank, [3])
