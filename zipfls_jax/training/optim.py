"""SGD and learning-rate schedules of the paper's recipes (SPEC section 6).

The optimizer is PyTorch's `SGD(momentum=0.9, weight_decay=1e-4)`, which the
authors use: weight decay is added to the gradient of every parameter before
the momentum buffer, not decoupled from it. Schedules are functions of the
optimizer step so that a resumed run sees exactly the same rates. This module
only builds optax objects; it must not know about models or data.
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import optax

SCHEDULES = ("step", "step_every", "cosine", "constant")


def create_learning_rate_schedule(*,
                                  base_learning_rate: float,
                                  schedule: str,
                                  steps_per_epoch: int,
                                  num_epochs: float,
                                  warmup_epochs: float = 0.0,
                                  decay_factor: float = 0.1,
                                  decay_at: Sequence[float] = (0.5, 0.75),
                                  decay_every_epochs: float = 30.0
                                 ) -> optax.Schedule:
  """Learning rate as a function of the optimizer step.

  Schedules:
    * 'step': multiply by `decay_factor` at each fraction `decay_at` of
      training (CIFAR/TinyImageNet: /10 at 50% and 75%). The step is applied
      at the right step, not one epoch late as in the authors' code.
    * 'step_every': multiply by `decay_factor` every `decay_every_epochs`
      epochs (ImageNet/iNat: /10 every 30 epochs).
    * 'cosine': cosine decay from the base rate to 0 over training.
    * 'constant': the base rate throughout.
  An optional linear warm-up from 0 multiplies the schedule over the first
  `warmup_epochs`; decay boundaries stay where they are without warm-up.

  Args:
    base_learning_rate: rate at step 0 (after warm-up).
    schedule: one of `SCHEDULES`.
    steps_per_epoch: optimizer steps per epoch (> 0).
    num_epochs: length of training in epochs (> 0).
    warmup_epochs: linear warm-up length in epochs (>= 0).
    decay_factor: multiplier applied at each step boundary.
    decay_at: fractions of training for 'step'.
    decay_every_epochs: period for 'step_every'.

  Returns:
    An optax schedule: step (int array) -> float32 learning rate.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
  if steps_per_epoch <= 0:
    raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}.")
  if num_epochs <= 0:
    raise ValueError(f"num_epochs must be > 0, got {num_epochs}.")
  if warmup_epochs < 0:
    raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
  total_steps = int(round(num_epochs * steps_per_epoch))

  if schedule == "step":
    for fraction in decay_at:
      if not 0.0 < fraction < 1.0:
        raise ValueError(f"decay_at fractions must lie in (0, 1), got {tuple(decay_at)}.")
    boundaries = {int(round(f * total_steps)): decay_factor for f in decay_at}
    main = optax.piecewise_constant_schedule(base_learning_rate, boundaries)
  elif schedule == "step_every":
    if decay_every_epochs <= 0:
      raise ValueError(f"decay_every_epochs must be > 0, got {decay_every_epochs}.")
    period = int(round(decay_every_epochs * steps_per_epoch))
    boundaries = {b: decay_factor for b in range(period, total_steps, period)}
    main = optax.piecewise_constant_schedule(base_learning_rate, boundaries)
  elif schedule == "cosine":
    main = optax.cosine_decay_schedule(base_learning_rate, max(total_steps, 1))
  else:
    main = optax.constant_schedule(base_learning_rate)

  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if warmup_steps == 0:
    return main

  def schedule_fn(step):
    warmup = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
    return main(step) * warmup

  return schedule_fn


def create_optimizer(learning_rate: optax.ScalarOrSchedule,
                     *,
                     momentum: float = 0.9,
                     nesterov: bool = False,
                     weight_decay: float = 1e-4) -> optax.GradientTransformation:
  """PyTorch-style SGD: g <- g + wd * p; m <- momentum * m + g; p <- p - lr * m.

  Weight decay applies to every parameter (BatchNorm scales and biases
  included), as in the authors' runs.
  """
  if momentum < 0:
    raise ValueError(f"momentum must be >= 0, got {momentum}.")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
  return optax.chain(
      optax.add_decayed_weights(weight_decay),
      optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )
