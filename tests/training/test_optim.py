"""Schedules against hand-computed rates; SGD against PyTorch's update rule in NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zipfls_jax.training import optim


def rates(schedule, steps):
  return np.array([float(schedule(jnp.asarray(s))) for s in steps])


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
  # 10 epochs of 20 steps: boundaries at steps 100 and 150.
  schedule = optim.create_learning_rate_schedule(
      base_learning_rate=0.1, schedule="step", steps_per_epoch=20, num_epochs=10)
  np.testing.assert_allclose(rates(schedule, [0, 99, 100, 149, 150, 199]),
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_step_every_30_epochs():
  schedule = optim.create_learning_rate_schedule(
      base_learning_rate=0.1, schedule="step_every", steps_per_epoch=10, num_epochs=100)
  np.testing.assert_allclose(rates(schedule, [0, 299, 300, 599, 600, 899, 900, 999]),
                             [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)


def test_cosine_and_warmup():
  cosine = optim.create_learning_rate_schedule(
      base_learning_rate=0.2, schedule="cosine", steps_per_epoch=10, num_epochs=10)
  np.testing.assert_allclose(rates(cosine, [0, 25, 50, 100]),
                             [0.2, 0.1 * (1 + np.cos(np.pi / 4)), 0.1, 0.0], atol=1e-7)
  warm = optim.create_learning_rate_schedule(
      base_learning_rate=0.1, schedule="step", steps_per_epoch=10, num_epochs=10,
      warmup_epochs=2)
  # Linear from 0 over 20 steps, then the step schedule (boundary still at 50).
  np.testing.assert_allclose(rates(warm, [0, 5, 10, 20, 49, 50]),
                             [0.0, 0.025, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(steps_per_epoch=0), "steps_per_epoch must be > 0"),
    (dict(decay_at=(0.5, 1.5)), r"decay_at fractions must lie in \(0, 1\)"),
])
def test_schedule_errors(kwargs, match):
  args = dict(base_learning_rate=0.1, schedule="step", steps_per_epoch=10, num_epochs=10)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    optim.create_learning_rate_schedule(**args)


def test_sgd_matches_pytorch_update_rule():
  # torch.optim.SGD(lr, momentum=0.9, weight_decay=1e-4), dampening 0:
  #   g = grad + wd * p; buf = g (first step) else 0.9 * buf + g; p -= lr * buf
  lr, wd, mu = 0.1, 1e-4, 0.9
  rng = np.random.default_rng(0)
  p_np = rng.normal(size=(3, 4))
  grads = [rng.normal(size=(3, 4)) for _ in range(4)]
  lrs = [0.1, 0.1, 0.01, 0.01]
  buf = None
  expected = p_np.copy()
  for g, lr in zip(grads, lrs):
    g = g + wd * expected
    buf = g if buf is None else mu * buf + g
    expected = expected - lr * buf

  schedule = optax.piecewise_constant_schedule(0.1, {2: 0.1})
  tx = optim.create_optimizer(schedule, momentum=mu, weight_decay=wd)
  params = {"w": jnp.asarray(p_np, jnp.float32)}
  state = tx.init(params)

  @jax.jit
  def update(params, state, g):
    updates, state = tx.update({"w": g}, state, params)
    return optax.apply_updates(params, updates), state

  for g in grads:
    params, state = update(params, state, jnp.asarray(g, jnp.float32))
  np.testing.assert_allclose(params["w"], expected, rtol=1e-5, atol=1e-6)
