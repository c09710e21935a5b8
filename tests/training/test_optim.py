"""Schedules against hand-computed rates; SGD against PyTorch's update rule in NumPy."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zipfls_jax.training import optim


def rates(schedule, steps):
  """The schedule's rates at `steps`, under jit as in the train step."""
  return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)))


def numpy_rates(*, lr, schedule, steps_per_epoch, num_epochs, warmup_epochs=0.0, factor=0.1,
                decay_at=(0.5, 0.75), every_epochs=30.0):
  """Every step's rate, from the formulas of the schedules' docstring."""
  total = int(round(num_epochs * steps_per_epoch))
  steps = np.arange(total, dtype=np.float64)
  if schedule == "step":
    drops = sum((steps >= round(f * total)).astype(float) for f in decay_at)
  elif schedule == "step_every":
    drops = np.floor(steps / round(every_epochs * steps_per_epoch))
  else:
    drops = np.zeros_like(steps)
  rate = lr * factor ** drops
  if schedule == "cosine":
    rate = 0.5 * lr * (1 + np.cos(np.pi * steps / total))
  warmup = round(warmup_epochs * steps_per_epoch)
  if warmup:
    rate = rate * np.minimum(1.0, steps / warmup)
  return rate


@pytest.mark.parametrize("kwargs", [
    dict(schedule="step", steps_per_epoch=7, num_epochs=20),
    dict(schedule="step", steps_per_epoch=7, num_epochs=20, decay_at=(0.3, 0.6, 0.9),
         factor=0.5),
    dict(schedule="step_every", steps_per_epoch=4, num_epochs=100),
    dict(schedule="step_every", steps_per_epoch=3, num_epochs=40, every_epochs=2.5, factor=0.5),
    dict(schedule="cosine", steps_per_epoch=9, num_epochs=11),
    dict(schedule="constant", steps_per_epoch=5, num_epochs=3),
    dict(schedule="step", steps_per_epoch=7, num_epochs=20, warmup_epochs=3),
    dict(schedule="step_every", steps_per_epoch=4, num_epochs=100, warmup_epochs=2.5),
    dict(schedule="cosine", steps_per_epoch=9, num_epochs=11, warmup_epochs=1),
    dict(schedule="constant", steps_per_epoch=5, num_epochs=3, warmup_epochs=2),
])
def test_every_step_of_every_schedule_matches_its_formula(kwargs):
  expected = numpy_rates(lr=0.1, **kwargs)
  schedule = optim.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule=kwargs["schedule"],
      steps_per_epoch=kwargs["steps_per_epoch"], num_epochs=kwargs["num_epochs"],
      warmup_epochs=kwargs.get("warmup_epochs", 0.0), lr_decay_factor=kwargs.get("factor", 0.1),
      lr_decay_at=kwargs.get("decay_at", (0.5, 0.75)),
      lr_decay_every_epochs=kwargs.get("every_epochs", 30.0))
  np.testing.assert_allclose(rates(schedule, np.arange(len(expected))), expected, rtol=2e-6,
                             atol=1e-8)  # float32 cosine near 0


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
  # 10 epochs of 20 steps: boundaries at steps 100 and 150.
  schedule = optim.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=20, num_epochs=10)
  np.testing.assert_allclose(rates(schedule, [0, 99, 100, 149, 150, 199]),
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-6)


def test_step_every_30_epochs():
  schedule = optim.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step_every", steps_per_epoch=10, num_epochs=100)
  np.testing.assert_allclose(rates(schedule, [0, 299, 300, 599, 600, 899, 900, 999]),
                             [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-5)


def test_cosine_and_warmup():
  cosine = optim.create_learning_rate_schedule(
      learning_rate=0.2, lr_schedule="cosine", steps_per_epoch=10, num_epochs=10)
  np.testing.assert_allclose(rates(cosine, [0, 25, 50, 100]),
                             [0.2, 0.1 * (1 + np.cos(np.pi / 4)), 0.1, 0.0], atol=1e-7)
  warm = optim.create_learning_rate_schedule(
      learning_rate=0.1, lr_schedule="step", steps_per_epoch=10, num_epochs=10,
      warmup_epochs=2)
  # Linear from 0 over 20 steps, then the step schedule (boundary still at 50).
  np.testing.assert_allclose(rates(warm, [0, 5, 10, 20, 49, 50]),
                             [0.0, 0.025, 0.05, 0.1, 0.1, 0.01], rtol=1e-6)


# The arguments are named as the config keys, so each message names the key.
@pytest.mark.parametrize("kwargs, match", [
    (dict(lr_schedule="linear"), r"lr_schedule must be one of .*got 'linear'"),
    (dict(steps_per_epoch=0), "steps_per_epoch must be > 0, got 0"),
    (dict(learning_rate=-0.1), r"learning_rate must be > 0, got -0\.1"),
    (dict(lr_decay_factor=0.0), r"lr_decay_factor must be > 0, got 0\.0"),
    (dict(lr_decay_every_epochs=0.0), r"lr_decay_every_epochs must be > 0, got 0\.0"),
    (dict(lr_decay_every_epochs=0.01, lr_schedule="step_every"),
     r"lr_decay_every_epochs=0\.01 is less than one step"),
    (dict(warmup_epochs=-1.0), r"warmup_epochs must be >= 0, got -1\.0"),
    (dict(lr_decay_at=(0.5, 1.5)),
     r"lr_decay_at must hold fractions of training in \(0, 1\), got \(0\.5, 1\.5\)"),
])
def test_schedule_errors(kwargs, match):
  args = dict(learning_rate=0.1, lr_schedule="step", steps_per_epoch=10, num_epochs=10)
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    optim.create_learning_rate_schedule(**args)


@pytest.mark.parametrize("kwargs, match", [
    (dict(momentum=-0.9), r"momentum must be >= 0, got -0\.9"),
    (dict(weight_decay=-1e-4), r"weight_decay must be >= 0, got -0\.0001"),
])
def test_optimizer_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    optim.create_optimizer(0.1, **kwargs)


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
