"""The baselines' losses against NumPy written from their formulas.

docs/method.md section 4 gives each formula; the references below are loops
in float64 that share no code with zipfls_jax. Values and gradients, `where=`
against boolean indexing, jit / vmap / pmap / shard_map on 8 fake CPU
devices, and the trace-time errors.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads

import zipfls_jax as zl


# --- NumPy references -------------------------------------------------------------

def np_softmax(z, t=1.0):
  z = np.asarray(z, np.float64) / t
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_log_softmax(z, t=1.0):
  return np.log(np_softmax(z, t))


def np_kl(p, q):
  """sum p (log p - log q), 0 log 0 = 0, per row."""
  out = np.zeros(p.shape[0])
  for i in range(p.shape[0]):
    for c in range(p.shape[1]):
      if p[i, c] > 0:
        out[i] += p[i, c] * (np.log(p[i, c]) - np.log(q[i, c]))
  return out


def np_bake(features, logits, omega, t):
  f = np.asarray(features, np.float64)
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  n = len(f)
  w = f @ f.T - 1e9 * np.eye(n)
  w = np.exp(w - w.max(1, keepdims=True))
  w /= w.sum(1, keepdims=True)
  return (1 - omega) * np.linalg.inv(np.eye(n) - omega * w) @ np_softmax(logits, t)


def np_ols(batches, num_classes):
  """Accumulator and counts after `batches` of (logits, labels), then S."""
  acc = np.zeros((num_classes, num_classes))
  cnt = np.zeros(num_classes)
  for logits, labels in batches:
    p = np_softmax(logits)
    for i, y in enumerate(labels):
      if np.argmax(logits[i]) == y:
        acc[y] += p[i]
        cnt[y] += 1
  s = np.full((num_classes, num_classes), 1.0 / num_classes)
  for y in range(num_classes):
    if cnt[y] > 0:
      s[y] = acc[y] / cnt[y]
  return acc, cnt, s


def _logits(n, c, seed, scale=2.0):
  return (np.random.default_rng(seed).normal(size=(n, c)) * scale).astype(np.float32)


def _labels(n, c, seed):
  return np.random.default_rng(seed + 100).integers(0, c, size=n).astype(np.int32)


RTOL = dict(rtol=2e-5, atol=2e-6)


# --- values against the formulas ---------------------------------------------------

def test_kd_loss_is_t2_kl_and_its_mean_is_the_pytorch_sum_over_n():
  z, t = _logits(6, 7, 0), _logits(6, 7, 1)
  got = jax.jit(functools.partial(zl.kd_loss, temperature=4.0))(z, t)
  want = 16.0 * np_kl(np_softmax(t, 4), np_softmax(z, 4))
  np.testing.assert_allclose(got, want, **RTOL)
  # KLDivLoss(reduction='sum')(log_softmax(z/T), softmax(t/T)) * T^2 / N.
  p = np_softmax(t, 4)
  torch_form = (p * (np.log(p) - np_log_softmax(z, 4))).sum() * 16 / 6
  np.testing.assert_allclose(np.mean(got), torch_form, rtol=2e-5)
  # Probabilities as the teacher, with exact zeros (0 log 0 = 0).
  probs = np.array([[0.5, 0.5, 0, 0, 0, 0, 0]] * 6, np.float32)
  got = jax.jit(functools.partial(zl.kd_loss, temperature=2.0, teacher_is_probs=True))(z, probs)
  np.testing.assert_allclose(got, 4.0 * np_kl(probs.astype(np.float64), np_softmax(z, 2)),
                             **RTOL)


def test_cs_kd_loss_per_pair_and_only_the_anchor_learns():
  anchor, friend = _logits(5, 9, 2), _logits(5, 9, 3)
  loss = lambda a, f: zl.cs_kd_loss(a, f).sum()
  np.testing.assert_allclose(jax.jit(zl.cs_kd_loss)(anchor, friend),
                             16.0 * np_kl(np_softmax(friend, 4), np_softmax(anchor, 4)), **RTOL)
  grad_a, grad_f = jax.jit(jax.grad(loss, argnums=(0, 1)))(anchor, friend)
  # d/dz_a T^2 KL(p_f || softmax(z_a / T)) = T (softmax(z_a / T) - p_f).
  np.testing.assert_allclose(grad_a, 4.0 * (np_softmax(anchor, 4) - np_softmax(friend, 4)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(grad_f, 0.0)


@pytest.mark.parametrize("temperature,multiplier", [(20.0, 100.0), (40.0, 1.0), (1.0, 3.0)])
def test_tf_kd_mean_equals_kldivloss_default_reduction(temperature, multiplier):
  n, c = 8, 10
  z, y = _logits(n, c, 4), _labels(n, c, 4)
  v = np.full((n, c), 0.01 / (c - 1))
  v[np.arange(n), y] = 0.99
  pv = np_softmax(v, temperature)
  # PyTorch KLDivLoss() default: sum over N x C elements / (N * C).
  want = multiplier * (pv * (np.log(pv) - np_log_softmax(z))).sum() / (n * c)
  fn = jax.jit(functools.partial(zl.tf_kd_regularization_loss, temperature=temperature,
                                 multiplier=multiplier))
  per_example = fn(z, y)
  assert per_example.shape == (n,)
  np.testing.assert_allclose(np.mean(per_example), want, rtol=2e-5)
  np.testing.assert_allclose(per_example, multiplier / c * np_kl(pv, np_softmax(z)), **RTOL)
  # Closed-form gradient of the mean: multiplier / (N C) (softmax(z) - p_v).
  grad = jax.jit(jax.grad(lambda x: fn(x, y).mean()))(z)
  np.testing.assert_allclose(grad, multiplier / (n * c) * (np_softmax(z) - pv), rtol=1e-4,
                             atol=1e-7)


def test_symmetric_kl_each_side_is_the_others_fixed_target():
  z1, z2 = _logits(6, 5, 5), _logits(6, 5, 6)
  got = jax.jit(zl.symmetric_kl_loss)(z1, z2)
  p1, p2 = np_softmax(z1), np_softmax(z2)
  np.testing.assert_allclose(got, np_kl(p1, p2) + np_kl(p2, p1), **RTOL)
  g1, g2 = jax.jit(jax.grad(lambda a, b: zl.symmetric_kl_loss(a, b).sum(), argnums=(0, 1)))(
      z1, z2)
  # Only KL(sg(p2) || p1) reaches z1: its gradient is p1 - p2 (and symmetrically).
  np.testing.assert_allclose(g1, p1 - p2, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(g2, p2 - p1, rtol=1e-4, atol=1e-6)


def test_linear_mmd_and_ddgsd():
  rng = np.random.default_rng(7)
  f1, f2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
  z1, z2 = _logits(6, 5, 8), _logits(6, 5, 9)
  mmd = np.sum((f1.astype(np.float64).mean(0) - f2.mean(0)) ** 2)
  np.testing.assert_allclose(jax.jit(zl.linear_mmd)(f1, f2), mmd, rtol=1e-5)
  got = jax.jit(functools.partial(zl.ddgsd_loss, kl_weight=1.0, mmd_weight=5e-4))(z1, z2, f1, f2)
  p1, p2 = np_softmax(z1), np_softmax(z2)
  want_mean = np.mean(np_kl(p1, p2) + np_kl(p2, p1)) + 5e-4 * mmd
  np.testing.assert_allclose(np.mean(got), want_mean, rtol=1e-5)
  # d MMD / d f1_i = 2 (mean f1 - mean f2) / N for every row.
  grad = jax.jit(jax.grad(zl.linear_mmd))(f1, f2)
  np.testing.assert_allclose(grad, np.broadcast_to(2 * (f1.mean(0) - f2.mean(0)) / 6, f1.shape),
                             rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("omega", [0.0, 0.5, 0.9])
def test_bake_targets_match_the_formula(omega):
  rng = np.random.default_rng(10)
  features = rng.normal(size=(12, 6)).astype(np.float32)
  logits = _logits(12, 7, 10)
  q = jax.jit(functools.partial(zl.bake_targets, omega=omega))(features, logits)
  want = np_bake(features, logits, omega, 4.0)
  np.testing.assert_allclose(q, want, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(np.sum(q, -1), 1.0, rtol=1e-5)
  if omega == 0.0:   # no propagation: each example's own P
    np.testing.assert_allclose(q, np_softmax(logits, 4), rtol=1e-5, atol=1e-7)
  # The targets carry no gradient; the KD loss against them does.
  g = jax.jit(jax.grad(lambda f, z: (zl.bake_targets(f, z, omega=omega) ** 2).sum(),
                       argnums=(0, 1)))(features, logits)
  assert all(np.all(np.asarray(x) == 0) for x in g)
  loss = lambda z: zl.kd_loss(z, zl.bake_targets(features, z, omega=omega), temperature=4.0,
                              teacher_is_probs=True).sum()
  np.testing.assert_allclose(jax.jit(jax.grad(loss))(logits),
                             4.0 * (np_softmax(logits, 4) - want), rtol=1e-3, atol=1e-5)


def test_bake_single_example_keeps_its_own_prediction():
  q = jax.jit(functools.partial(zl.bake_targets, omega=0.9))(
      np.ones((1, 3), np.float32), np.array([[1.0, 0.0, -1.0]], np.float32))
  np.testing.assert_allclose(q, np_softmax([[1.0, 0.0, -1.0]], 4), rtol=1e-5)


def test_byot_exit_loss_and_feature_distance():
  z_exit, z_final, y = _logits(6, 8, 11), _logits(6, 8, 12), _labels(6, 8, 11)
  got = jax.jit(zl.byot_exit_loss)(z_exit, z_final, y)
  ce = -np_log_softmax(z_exit)[np.arange(6), y]
  soft = -(np_softmax(z_final, 3) * np_log_softmax(z_exit, 3)).sum(-1)   # no T^2
  np.testing.assert_allclose(got, 0.7 * ce + 0.3 * soft, **RTOL)
  g_final = jax.jit(jax.grad(lambda f: zl.byot_exit_loss(z_exit, f, y).sum()))(z_final)
  np.testing.assert_array_equal(g_final, 0.0)

  rng = np.random.default_rng(13)
  g1, g2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
  np.testing.assert_allclose(jax.jit(zl.byot_feature_loss)(g1, g2),
                             np.linalg.norm(g1.astype(np.float64) - g2), rtol=1e-5)
  grads = jax.jit(jax.grad(zl.byot_feature_loss, argnums=(0, 1)))(g1, g2)
  d = g1.astype(np.float64) - g2
  np.testing.assert_allclose(grads[0], d / np.linalg.norm(d), rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(grads[1], 0.0)
  # Equal features: distance 0 and gradient 0, not NaN.
  g0 = jax.jit(jax.grad(zl.byot_feature_loss))(g1, g1)
  np.testing.assert_array_equal(g0, 0.0)


def test_ps_kd_schedule_and_targets():
  y = np.array([0, 2, 1], np.int32)
  prev = np_softmax(_logits(3, 4, 14)).astype(np.float32)
  one_hot = np.eye(4)[y]
  fn = jax.jit(functools.partial(zl.ps_kd_targets, num_epochs=10))
  np.testing.assert_allclose(fn(y, prev, epoch=0), one_hot)           # epoch 0: the label
  for epoch in (1, 5, 9):
    a = 0.8 * (epoch + 1) / 10
    np.testing.assert_allclose(fn(y, prev, epoch=epoch), (1 - a) * one_hot + a * prev,
                               rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(zl.ps_kd_alpha(9, num_epochs=10), 0.8, rtol=1e-6)
  z = _logits(3, 4, 15)
  target = np.asarray(fn(y, prev, epoch=4))
  np.testing.assert_allclose(jax.jit(zl.soft_cross_entropy)(z, target),
                             -(target * np_log_softmax(z)).sum(-1), **RTOL)
  # Closed form: d/dz = softmax(z) - target (targets summing to 1).
  np.testing.assert_allclose(jax.jit(jax.grad(lambda x: zl.soft_cross_entropy(x, target).sum()))(z),
                             np_softmax(z) - target, rtol=1e-4, atol=1e-6)


def test_ols_two_epochs_match_numpy():
  c = 5
  epoch1 = [(_logits(8, c, s), _labels(8, c, s)) for s in (20, 21)]
  epoch2 = [(_logits(8, c, s), _labels(8, c, s)) for s in (22, 23)]
  for logits, labels in epoch1 + epoch2:   # make sure several examples count
    labels[:3] = np.argmax(logits[:3], -1)
  update = jax.jit(zl.ols_update)
  state = zl.ols_init(c)
  for logits, labels in epoch1:
    np.testing.assert_allclose(jax.jit(zl.ols_loss)(logits, labels, state),   # S^0 = 0: 0.5 CE
                               -0.5 * np_log_softmax(logits)[np.arange(8), labels], **RTOL)
    state = update(state, logits, labels)
  acc, cnt, s1 = np_ols(epoch1, c)
  np.testing.assert_allclose(state.accumulator, acc, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(state.counts, cnt)
  state = jax.jit(zl.ols_next_epoch)(state)
  np.testing.assert_allclose(state.matrix, s1, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(state.counts, 0.0)
  for logits, labels in epoch2:
    want = (-0.5 * np_log_softmax(logits)[np.arange(8), labels]
            - 0.5 * (s1[labels] * np_log_softmax(logits)).sum(-1))
    np.testing.assert_allclose(jax.jit(zl.ols_loss)(logits, labels, state), want, **RTOL)
    state = update(state, logits, labels)
  np.testing.assert_allclose(jax.jit(zl.ols_next_epoch)(state).matrix, np_ols(epoch2, c)[2],
                             rtol=1e-5, atol=1e-7)


def test_ols_zero_count_rows_are_uniform():
  update_and_swap = jax.jit(lambda s, z, y: zl.ols_next_epoch(zl.ols_update(s, z, y)))
  state = update_and_swap(zl.ols_init(4), np.array([[3.0, 0, 0, 0]], np.float32),
                          np.array([0], np.int32))
  matrix = np.asarray(state.matrix)
  np.testing.assert_allclose(matrix[0], np_softmax([[3.0, 0, 0, 0]])[0], rtol=1e-6)
  np.testing.assert_allclose(matrix[1:], 0.25)


# --- gradients numerically ------------------------------------------------------------

def _per_example_cases():
  n, c = 4, 6
  z, z2, y = _logits(n, c, 30, 1.0), _logits(n, c, 31, 1.0), _labels(n, c, 30)
  rng = np.random.default_rng(32)
  f1, f2 = rng.normal(size=(2, n, 3)).astype(np.float32)
  target = np_softmax(_logits(n, c, 33)).astype(np.float32)
  matrix = np_ols([(z2, np.argmax(z2, -1))], c)[2].astype(np.float32)
  state = zl.OLSState(matrix, np.zeros_like(matrix), np.zeros(c, np.float32))
  return {
      "kd": (lambda a, w=None: zl.kd_loss(a, z2, temperature=4.0, where=w), z, y),
      "cs_kd": (lambda a, w=None: zl.cs_kd_loss(a, z2, where=w), z, y),
      "tf_kd": (lambda a, w=None: zl.tf_kd_regularization_loss(
          a, y, temperature=20.0, multiplier=100.0, where=w), z, y),
      "soft_ce": (lambda a, w=None: zl.soft_cross_entropy(a, target, temperature=2.0, where=w),
                  z, y),
      "symmetric_kl": (lambda a, w=None: zl.symmetric_kl_loss(a, z2, where=w), z, y),
      "byot_exit": (lambda a, w=None: zl.byot_exit_loss(a, z2, y, where=w), z, y),
      "ols": (lambda a, w=None: zl.ols_loss(a, y, state, where=w), z, y),
      "ddgsd": (lambda a, w=None: zl.ddgsd_loss(a, z2, f1, f2, mmd_weight=0.1, where=w), z, y),
  }


# Finite differences ignore stop_gradient, so the symmetric KL (whose input is
# also its other half's target) is checked against its closed form instead.
@pytest.mark.parametrize("name", sorted(set(_per_example_cases()) - {"symmetric_kl", "ddgsd"}))
def test_gradients_numerically(name):
  fn, z, _ = _per_example_cases()[name]
  check_grads(jax.jit(lambda a: fn(a).sum()), (jnp.asarray(z),), order=1, modes=["rev"],
              atol=2e-2, rtol=2e-2)


def test_feature_terms_gradients_numerically():
  rng = np.random.default_rng(34)
  f1, f2 = (jnp.asarray(x) for x in rng.normal(size=(2, 5, 3)).astype(np.float32))
  check_grads(jax.jit(lambda a: zl.linear_mmd(a, f2)), (f1,), order=1, modes=["rev"],
              atol=2e-2, rtol=2e-2)
  check_grads(jax.jit(lambda a: zl.byot_feature_loss(a, f2)), (f1,), order=1, modes=["rev"],
              atol=2e-2, rtol=2e-2)


# --- where= -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(_per_example_cases()))
def test_where_masks_values_and_gradients_even_of_nan_rows(name):
  fn, z, _ = _per_example_cases()[name]
  where = np.array([True, False, True, False])
  poisoned = z.copy()
  poisoned[1] = np.nan
  poisoned[3] = np.inf
  masked = jax.jit(fn)(poisoned, where)
  np.testing.assert_array_equal(np.asarray(masked)[~where], 0.0)
  if name != "ddgsd":   # per-example values: equal to the unmasked ones on kept rows
    np.testing.assert_allclose(np.asarray(masked)[where], np.asarray(jax.jit(fn)(z))[where],
                               **RTOL)
  grad_fn = jax.jit(jax.grad(lambda a: fn(a, where).sum()))
  grad = np.asarray(grad_fn(poisoned))
  assert np.all(np.isfinite(grad))
  np.testing.assert_array_equal(grad[~where], 0.0)
  np.testing.assert_allclose(grad[where], np.asarray(grad_fn(z))[where], rtol=1e-5, atol=1e-7)


def test_where_equals_boolean_indexing_for_the_batch_statistics():
  rng = np.random.default_rng(40)
  f1, f2 = rng.normal(size=(2, 8, 3)).astype(np.float32)
  z1, z2 = _logits(8, 5, 40), _logits(8, 5, 41)
  labels = np.argmax(z1, -1).astype(np.int32)
  where = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)
  f1_poisoned = f1.copy()
  f1_poisoned[~where] = np.nan

  @jax.jit
  def statistics(f1, f2, z1, z2, labels, where=None):
    return (zl.linear_mmd(f1, f2, where=where), zl.byot_feature_loss(f1, f2, where=where),
            zl.ddgsd_loss(z1, z2, f1, f2, where=where, mmd_weight=0.1),
            zl.bake_targets(f1, z1, omega=0.5, where=where),
            zl.ols_update(zl.ols_init(5), z1, labels, where=where))

  masked = statistics(f1_poisoned, f2, z1, z2, labels, where)
  kept = statistics(*(x[where] for x in (f1, f2, z1, z2, labels)))
  for got, want in zip(masked[:2], kept[:2]):   # MMD and BYOT's distance
    np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(masked[2])[where], kept[2], rtol=1e-5)   # DDGSD
  # BAKE: masked examples are nobody's neighbours; kept rows equal the kept sub-batch's.
  assert np.all(np.isfinite(masked[3]))
  np.testing.assert_allclose(np.asarray(masked[3])[where],
                             np_bake(f1[where], z1[where], 0.5, 4.0), rtol=1e-4, atol=1e-6)
  # OLS: masked rows are not counted.
  acc, cnt, _ = np_ols([(z1[where], labels[where])], 5)
  np.testing.assert_allclose(masked[4].accumulator, acc, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(masked[4].counts, cnt)


# --- transformations over 8 fake CPU devices ------------------------------------------------

def _mesh():
  assert jax.device_count() == 8
  return jax.make_mesh((8,), ("data",))


def test_vmap_matches_batch():
  z, t, y = _logits(6, 5, 50), _logits(6, 5, 51), _labels(6, 5, 50)
  fn = lambda a, b, l: zl.tf_kd_regularization_loss(a, l, temperature=20.0, multiplier=1.0) + \
      zl.kd_loss(a, b, temperature=4.0) + zl.byot_exit_loss(a, b, l)
  want = np.asarray(jax.jit(fn)(z, t, y))
  np.testing.assert_allclose(jax.jit(jax.vmap(fn))(z, t, y), want, rtol=1e-6)
  # Leading axes are free: (2, 3, C) equals the flat batch.
  np.testing.assert_allclose(
      jax.jit(fn)(z.reshape(2, 3, 5), t.reshape(2, 3, 5), y.reshape(2, 3)), want.reshape(2, 3),
      rtol=1e-6)


def test_bake_global_batch_under_shard_map_and_pmap_equals_single_device():
  mesh = _mesh()
  rng = np.random.default_rng(60)
  features = rng.normal(size=(32, 6)).astype(np.float32)
  logits = _logits(32, 7, 60)
  where = rng.random(32) < 0.8
  want = np_bake(features[where], logits[where], 0.9, 4.0)
  single = np.asarray(jax.jit(functools.partial(zl.bake_targets, omega=0.9))(
      features, logits, where=where))
  np.testing.assert_allclose(single[where], want, rtol=1e-4, atol=1e-6)
  want = single
  fn = functools.partial(zl.bake_targets, omega=0.9, axis_name="data")
  sharded = jax.jit(jax.shard_map(lambda f, z, w: fn(f, z, where=w), mesh=mesh,
                                  in_specs=P("data"), out_specs=P("data")))
  inputs = jax.device_put((features, logits, where), jax.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(sharded(*inputs), want, rtol=1e-5, atol=1e-7)
  # Without the gather each device would only see its own 4 examples: different targets.
  local = jax.jit(jax.shard_map(
      lambda f, z, w: zl.bake_targets(f, z, omega=0.9, where=w), mesh=mesh,
      in_specs=P("data"), out_specs=P("data")))(*inputs)
  assert not np.allclose(local, want, atol=1e-3)
  pmapped = jax.pmap(lambda f, z, w: zl.bake_targets(f, z, omega=0.9, where=w, axis_name="d"),
                     axis_name="d")(features.reshape(8, 4, 6), logits.reshape(8, 4, 7),
                                    where.reshape(8, 4))
  np.testing.assert_allclose(np.asarray(pmapped).reshape(32, 7), want, rtol=1e-5, atol=1e-7)
  # Plain jit over globally sharded arrays: the global batch without axis_name.
  np.testing.assert_allclose(jax.jit(functools.partial(zl.bake_targets, omega=0.9))(
      inputs[0], inputs[1], where=inputs[2]), want, rtol=1e-5, atol=1e-7)


def test_batch_statistics_are_global_under_shard_map():
  mesh = _mesh()
  rng = np.random.default_rng(61)
  f1, f2 = rng.normal(size=(2, 16, 3)).astype(np.float32)
  z1, z2 = _logits(16, 5, 61), _logits(16, 5, 62)
  where = np.zeros(16, bool)
  where[[0, 1, 2, 9, 15]] = True   # uneven across devices
  inputs = jax.device_put((f1, f2, z1, z2, where), jax.NamedSharding(mesh, P("data")))

  def per_device(f1, f2, z1, z2, w):
    ddgsd = zl.ddgsd_loss(z1, z2, f1, f2, mmd_weight=0.1, where=w, axis_name="data")
    return (zl.linear_mmd(f1, f2, where=w, axis_name="data"),
            zl.byot_feature_loss(f1, f2, where=w, axis_name="data"),
            zl.masked_batch_mean(ddgsd, w, axis_name="data"))

  mmd, dist, ddgsd_mean = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"),
                                                out_specs=P()))(*inputs)
  f1k, f2k = f1[where].astype(np.float64), f2[where]
  want_mmd = np.sum((f1k.mean(0) - f2k.mean(0)) ** 2)
  np.testing.assert_allclose(mmd, want_mmd, rtol=1e-5)
  np.testing.assert_allclose(dist, np.linalg.norm(f1k - f2k), rtol=1e-5)
  p1, p2 = np_softmax(z1[where]), np_softmax(z2[where])
  np.testing.assert_allclose(ddgsd_mean, np.mean(np_kl(p1, p2) + np_kl(p2, p1)) + 0.1 * want_mmd,
                             rtol=1e-5)


def test_ols_update_is_global_under_shard_map_and_jit():
  mesh = _mesh()
  c = 6
  logits = _logits(16, c, 63)
  labels = _labels(16, c, 63)
  labels[::2] = np.argmax(logits[::2], -1)
  acc, cnt, _ = np_ols([(logits, labels)], c)
  state = zl.ols_init(c)
  inputs = jax.device_put((logits, labels), jax.NamedSharding(mesh, P("data")))
  got = jax.jit(jax.shard_map(
      lambda s, z, y: zl.ols_update(s, z, y, axis_name="data"), mesh=mesh,
      in_specs=(P(), P("data"), P("data")), out_specs=P()))(state, *inputs)
  np.testing.assert_allclose(got.accumulator, acc, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(got.counts, cnt)
  got = jax.jit(zl.ols_update)(state, *inputs)
  np.testing.assert_allclose(got.accumulator, acc, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(got.counts, cnt)


def test_per_example_losses_under_shard_map_and_pmap():
  mesh = _mesh()
  z, t, y = _logits(16, 5, 64), _logits(16, 5, 65), _labels(16, 5, 64)
  fn = lambda a, b, l: zl.cs_kd_loss(a, b) + zl.tf_kd_regularization_loss(
      a, l, temperature=20.0, multiplier=100.0) + zl.symmetric_kl_loss(a, b)
  want = np.asarray(jax.jit(fn)(z, t, y))
  inputs = jax.device_put((z, t, y), jax.NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=P("data"),
                                                   out_specs=P("data")))(*inputs), want,
                             rtol=1e-6)
  np.testing.assert_allclose(jax.jit(fn)(*inputs), want, rtol=1e-6)
  np.testing.assert_allclose(
      jax.pmap(fn)(z.reshape(8, 2, 5), t.reshape(8, 2, 5), y.reshape(8, 2)).reshape(-1), want,
      rtol=1e-6)


# --- errors -----------------------------------------------------------------------------------

_Z = np.zeros((4, 5), np.float32)
_Y = np.zeros(4, np.int32)
_F = np.zeros((4, 3), np.float32)


@pytest.mark.parametrize("call,error,match", [
    (lambda: zl.kd_loss(_Z, _Z[:, :4], temperature=4.0), ValueError, "teacher"),
    (lambda: zl.kd_loss(_Z, _Z, temperature=0.0), ValueError, "temperature"),
    (lambda: zl.kd_loss(_Z.astype(np.int32), _Z, temperature=1.0), TypeError, "student_logits"),
    (lambda: zl.cs_kd_loss(_Z, _Z[:3]), ValueError, "friend_logits"),
    (lambda: zl.tf_kd_regularization_loss(_Z, _Y.astype(np.float32), temperature=20.0,
                                          multiplier=1.0), TypeError, "labels"),
    (lambda: zl.tf_kd_regularization_loss(_Z, _Y, temperature=20.0, multiplier=-1.0),
     ValueError, "multiplier"),
    (lambda: zl.tf_kd_regularization_loss(_Z, _Y, temperature=20.0, multiplier=1.0,
                                          correct_prob=1.5), ValueError, "correct_prob"),
    (lambda: zl.bake_targets(_F, _Z, omega=1.0), ValueError, "omega"),
    (lambda: zl.bake_targets(_F[:3], _Z, omega=0.5), ValueError, "features"),
    (lambda: zl.bake_targets(_F[None], _Z, omega=0.5), ValueError, "features"),
    (lambda: zl.bake_targets(_F, _Z, omega=0.5, where=np.ones(3, bool)), ValueError, "where"),
    (lambda: zl.byot_exit_loss(_Z, _Z, _Y, alpha=2.0), ValueError, "alpha"),
    (lambda: zl.byot_feature_loss(_F, _F[:, :2]), ValueError, "final_features"),
    (lambda: zl.linear_mmd(_F, _F, where=np.ones(4, np.int32)), TypeError, "where"),
    (lambda: zl.ddgsd_loss(_Z, _Z, _F[:3], _F[:3]), ValueError, "features1"),
    (lambda: zl.ddgsd_loss(_Z, _Z, _F, _F, mmd_weight=-1.0), ValueError, "mmd_weight"),
    (lambda: zl.ps_kd_targets(_Y, _Z, epoch=0, num_epochs=0), ValueError, "num_epochs"),
    (lambda: zl.ps_kd_targets(_Y[:3], _Z, epoch=0, num_epochs=5), ValueError, "labels"),
    (lambda: zl.ols_loss(_Z, _Y, zl.ols_init(4)), ValueError, "state.matrix"),
    (lambda: zl.ols_loss(_Z, _Y, (1, 2, 3)), TypeError, "OLSState"),
    (lambda: zl.ols_init(1), ValueError, "num_classes"),
    (lambda: zl.soft_cross_entropy(_Z, _Z[:, :3]), ValueError, "targets"),
])
def test_bad_input_raises_naming_the_argument(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_traced_hyperparameter_is_refused_and_traced_epoch_is_fine():
  with pytest.raises(TypeError, match="temperature"):
    jax.jit(lambda t: zl.kd_loss(_Z, _Z, temperature=t))(4.0)
  targets = jax.jit(lambda e: zl.ps_kd_targets(_Y, _Z + 0.2, epoch=e, num_epochs=4))(
      jnp.int32(0))
  np.testing.assert_array_equal(targets, np.eye(5)[_Y])


def test_docstring_examples_run():
  import doctest   # pylint: disable=g-import-not-at-top
  from zipfls_jax import self_distillation   # pylint: disable=g-import-not-at-top
  globs = {"jnp": jnp, **{name: getattr(zl, name) for name in zl.__all__}}
  result = doctest.testmod(self_distillation, extraglobs=globs, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
