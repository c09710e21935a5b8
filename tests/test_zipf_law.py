"""The Zipf's-law diagnostics against NumPy references written from the formulas.

Ranked sums: each example's softmax sorted in float64 NumPy, the target
deleted and the rest renormalised for the non-target curve, split by
"no class scores higher than the label". Fits: `np.polyfit` on the log-log
points. Synthetic power laws recover their exponent within 1e-3, and a
padded eval sharded over 8 fake devices in several batches equals one
unpadded batch on one device.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import zipfls_jax
from zipfls_jax import zipf_law


def reference_sums(logits, labels):
  """float64 NumPy: (probs (2, C), nontarget (2, C - 1), count (2,))."""
  logits = np.asarray(logits, np.float64)
  num_classes = logits.shape[1]
  probs, nontarget, count = np.zeros((2, num_classes)), np.zeros((2, num_classes - 1)), np.zeros(2)
  for z, y in zip(logits, labels):
    p = np.exp(z - z.max())
    p /= p.sum()
    group = 0 if np.sum(z > z[y]) == 0 else 1
    probs[group] += np.sort(p)[::-1]
    q = np.delete(p, y)
    nontarget[group] += np.sort(q / q.sum())[::-1]
    count[group] += 1
  return probs, nontarget, count


def reference_fit(y, first, last):
  """np.polyfit of log y on log r over ranks first..last, zeros dropped."""
  r = np.arange(first, last + 1, dtype=np.float64)
  y = np.asarray(y, np.float64)[first - 1:last]
  keep = y > 0
  x, v = np.log(r[keep]), np.log(y[keep])
  slope, intercept = np.polyfit(x, v, 1)
  residual = v - (intercept + slope * x)
  r2 = 1 - np.sum(residual ** 2) / np.sum((v - v.mean()) ** 2)
  return -slope, intercept, r2, keep.sum()


def make_logits(seed, n, c):
  rng = np.random.default_rng(seed)
  logits = (3 * rng.normal(size=(n, c))).astype(np.float32)
  labels = rng.integers(0, c, size=n).astype(np.int32)
  # Make some rows correct, and one row with the label tied for first.
  logits[: n // 3, :][np.arange(n // 3), labels[: n // 3]] += 8.0
  logits[-1, :] = 0.0
  logits[-1, labels[-1]] = logits[-1, (labels[-1] + 1) % c] = 2.0
  return logits, labels


def assert_sums_close(sums, reference, rtol=2e-6, atol=1e-6):
  for got, want in zip((sums.probs, sums.nontarget, sums.count), reference):
    np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)


def test_ranked_sums_equal_numpy_reference_with_padding_masked():
  logits, labels = make_logits(0, 21, 7)
  where = np.arange(21) % 4 != 1
  padded = logits.copy()
  padded[~where] = np.nan  # whatever padding holds must not leak
  sums = jax.jit(functools.partial(zipfls_jax.ranked_probability_sums))(
      padded, labels, where=where)
  reference = reference_sums(logits[where], labels[where])
  assert_sums_close(sums, reference)
  assert reference[2][0] > 0 and reference[2][1] > 0  # both groups are exercised
  # The tied row counts as correct: no class scores strictly higher.
  tied = jax.jit(zipfls_jax.ranked_probability_sums)(logits[-1:], labels[-1:])
  np.testing.assert_array_equal(tied.count, [1.0, 0.0])
  np.testing.assert_allclose(sums.mean(), (reference[0][0] + reference[0][1])
                             / reference[2].sum(), rtol=2e-6)
  np.testing.assert_allclose(sums.mean("incorrect", nontarget=True),
                             reference[1][1] / reference[2][1], rtol=2e-6)
  for subset in zipf_law.SUBSETS:
    np.testing.assert_allclose(np.sum(sums.mean(subset)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.sum(sums.mean(subset, nontarget=True)), 1.0, rtol=1e-5)


def test_confident_nontarget_curve_does_not_cancel():
  # p_target = 1 - 1e-12 in float64: 1 - p_target is 0 in float32.
  logits = jnp.array([[30.0, 0.0, -1.0, -2.0]])
  sums = jax.jit(zipfls_jax.ranked_probability_sums)(logits, jnp.array([0]))
  q = np.exp([0.0, -1.0, -2.0])
  np.testing.assert_allclose(sums.mean(nontarget=True), q / q.sum(), rtol=1e-6)


def test_padded_sharded_batches_equal_one_unpadded_batch_on_one_device():
  logits, labels = make_logits(1, 37, 11)
  one_device = jax.devices()[0]
  single = jax.jit(zipfls_jax.ranked_probability_sums)(jax.device_put(logits, one_device),
                                                        jax.device_put(labels, one_device))
  assert single.probs.sharding.device_set == {one_device}
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  data, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  global_jit = jax.jit(lambda z, y, m: zipfls_jax.ranked_probability_sums(z, y, where=m),
                       in_shardings=(data, data, data), out_shardings=repl)
  per_device = jax.jit(jax.shard_map(
      lambda z, y, m: zipfls_jax.ranked_probability_sums(z, y, where=m, axis_name="data"),
      mesh=mesh, in_specs=P("data"), out_specs=P()))
  for step in (global_jit, per_device):
    total = zipfls_jax.RankedProbabilitySums.zeros(11)
    for start in range(0, 37, 16):  # batches of 16: the last has 11 padding rows
      z, y = logits[start:start + 16], labels[start:start + 16]
      pad = 16 - len(y)
      m = np.arange(16) < len(y)
      z = np.concatenate([z, np.full((pad, 11), 1e30, np.float32)])
      y = np.concatenate([y, np.zeros(pad, np.int32)])
      total = total + step(z, y, m)
    for got, want in zip(jax.tree.leaves(total), jax.tree.leaves(single)):
      np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert_sums_close(single, reference_sums(logits, labels))


def test_fit_equals_polyfit_with_a_rank_range_and_zeros_dropped():
  rng = np.random.default_rng(2)
  y = np.arange(1, 51) ** -1.3 * np.exp(0.2 * rng.normal(size=50))
  y[[5, 17, 40]] = 0.0
  for ranks in (None, (2, 50), (3, 30)):
    fit = zipfls_jax.fit_power_law(jnp.asarray(y, jnp.float32), ranks=ranks)
    first, last = ranks or (1, 50)
    exponent, intercept, r2, n = reference_fit(y, first, last)
    np.testing.assert_allclose(fit.exponent, exponent, rtol=1e-4)
    np.testing.assert_allclose(fit.intercept, intercept, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.r_squared, r2, rtol=1e-4)
    assert int(fit.num_points) == n
    assert 0.5 < r2 < 0.999  # a noisy curve: R^2 is tested away from 1


def test_synthetic_power_laws_recover_their_exponent():
  c, exponents = 1000, np.array([0.3, 1.0, 1.7, 3.0])
  p = np.arange(1, c + 1, dtype=np.float64)[None] ** -exponents[:, None]
  p /= p.sum(axis=1, keepdims=True)
  fit = zipfls_jax.fit_power_law(jnp.asarray(p, jnp.float32))
  np.testing.assert_array_less(np.abs(fit.exponent - exponents), 1e-3)
  np.testing.assert_array_less(np.abs(fit.intercept - np.log(p[:, 0])), 1e-3)
  np.testing.assert_array_less(1 - 1e-5, fit.r_squared)
  # The same laws per example, in a random class order, with or without the
  # target (placed at rank 4, so the non-target curve is the law with one
  # point removed and renormalised: no longer an exact power law).
  rng = np.random.default_rng(3)
  order = np.stack([rng.permutation(c) for _ in exponents])
  logits = np.empty((len(exponents), c), np.float32)
  np.put_along_axis(logits, order, np.log(p).astype(np.float32), axis=1)
  scores = jax.jit(zipfls_jax.zipf_scores)(jnp.asarray(logits))
  np.testing.assert_allclose(scores.exponent, exponents, atol=1e-3)
  np.testing.assert_allclose(scores.r_squared, 1.0, atol=1e-5)
  labels = order[:, 3].astype(np.int32)
  nontarget = jax.jit(zipfls_jax.zipf_scores)(jnp.asarray(logits), labels=jnp.asarray(labels))
  for i, row in enumerate(p):
    want = reference_fit(np.delete(row, 3) / (1 - row[3]), 1, c - 1)
    np.testing.assert_allclose(nontarget.exponent[i], want[0], atol=1e-4)
    np.testing.assert_allclose(nontarget.r_squared[i], want[2], atol=1e-5)
    assert want[2] < 1 - 1e-4 or exponents[i] < 0.5  # the removed point bends the line


def test_per_example_scores_fit_log_softmax_even_where_probabilities_underflow():
  logits = np.zeros((2, 40), np.float32)
  logits[0] = -2.0 * np.log(np.arange(1, 41))  # exponent 2
  logits[1] = -200.0 * np.log(np.arange(1, 41))  # p underflows to 0 past rank 1
  scores = jax.jit(zipfls_jax.zipf_scores)(jnp.asarray(logits[:, ::-1].copy()))
  np.testing.assert_allclose(scores.exponent, [2.0, 200.0], rtol=1e-4)
  np.testing.assert_array_equal(scores.num_points, [40, 40])


def test_score_summary_is_the_masked_mean_and_std_across_devices():
  rng = np.random.default_rng(4)
  exponent = rng.uniform(0.5, 2.0, size=16).astype(np.float32)
  r2 = rng.uniform(0.8, 1.0, size=16).astype(np.float32)
  where = rng.random(16) < 0.7
  scores = zipfls_jax.PowerLawFit(exponent, jnp.zeros(16), r2, jnp.full(16, 9))
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  summary = jax.jit(jax.shard_map(
      lambda s, m: zipfls_jax.zipf_score_summary(s, where=m, axis_name="data"),
      mesh=mesh, in_specs=P("data"), out_specs=P()))(scores, where)
  assert float(summary["count"]) == where.sum()
  np.testing.assert_allclose(summary["exponent_mean"], exponent[where].mean(), rtol=1e-5)
  np.testing.assert_allclose(summary["exponent_std"], exponent[where].std(), rtol=1e-4)
  np.testing.assert_allclose(summary["r_squared_mean"], r2[where].mean(), rtol=1e-5)
  np.testing.assert_allclose(summary["r_squared_std"], r2[where].std(), rtol=1e-3)


def test_flat_and_degenerate_curves():
  flat = zipfls_jax.fit_power_law(jnp.full((5,), 0.2))
  assert float(flat.exponent) == 0.0 and float(flat.r_squared) == 1.0
  one_point = zipfls_jax.fit_power_law(jnp.array([1.0, 0.0, 0.0]))
  assert np.isnan(float(one_point.exponent)) and int(one_point.num_points) == 1
  r = np.arange(1.0, 4.0)
  batched = zipfls_jax.fit_power_law(jnp.asarray(np.stack([r ** -1.0, r ** -2.0]), jnp.float32))
  np.testing.assert_allclose(batched.exponent, [1.0, 2.0], rtol=1e-5)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match=r"`ranks` must satisfy 1 <= first < last <= 5"):
    zipfls_jax.fit_power_law(jnp.ones(5), ranks=(2, 6))
  with pytest.raises(ValueError, match=r"`ranks`.*got \(3, 3\)"):
    zipfls_jax.fit_power_law(jnp.ones(5), ranks=(3, 3))
  with pytest.raises(TypeError, match="`ranks` must be a pair of ints"):
    zipfls_jax.fit_power_law(jnp.ones(5), ranks=3)
  with pytest.raises(TypeError, match="`mean_probs` must be a floating-point"):
    zipfls_jax.fit_power_law(jnp.ones(5, jnp.int32))
  with pytest.raises(ValueError, match=r"`logits` must have shape \(N, C\)"):
    zipfls_jax.ranked_probability_sums(jnp.ones((2, 3, 4)), jnp.zeros((2, 3), jnp.int32))
  with pytest.raises(ValueError, match="`where` must be a boolean mask of shape"):
    zipfls_jax.ranked_probability_sums(jnp.ones((2, 3)), jnp.zeros(2, jnp.int32),
                                       where=jnp.ones(3, bool))
  with pytest.raises(ValueError, match="`subset` must be one of"):
    zipfls_jax.RankedProbabilitySums.zeros(3).mean("right")
  with pytest.raises(ValueError, match="`num_classes` must be an int >= 2"):
    zipfls_jax.RankedProbabilitySums.zeros(1)
  with pytest.raises(TypeError, match="`scores` must be the PowerLawFit"):
    zipfls_jax.zipf_score_summary({"exponent": jnp.ones(3)})
