"""SGD and learning-rate schedules of the paper's recipes (docs/method.md section 6).

The optimizer is PyTorch's `SGD(momentum=0.9, weight_decay=1e-4)`, which the
authors use: weight decay is added to the gradient of every parameter before
the momentum buffer, not decoupled from it. Schedules are functions of the
optimizer step so that a resumed run sees exactly the same rates. This module
only builds optax objects (and checks their arguments, which are named as
the config keys they come from); it must not know about models or data.
"""
from __future__ import annotations

from typing import Sequence

import optax

SCHEDULES = ("step", "step_every", "cosine", "constant")


def create_learning_rate_schedule(*,
                                  learning_rate: float,
                                  lr_schedule: str,
                                  steps_per_epoch: int,
                                  num_epochs: float,
                                  warmup_epochs: float = 0.0,
                                  lr_decay_factor: float = 0.1,
                                  lr_decay_at: Sequence[float] = (0.5, 0.75),
                                  lr_decay_every_epochs: float = 30.0
                                 ) -> optax.Schedule:
  """Learning rate as a function of the optimizer step.

  Schedules:
    * 'step': multiply by `lr_decay_factor` at each fraction `lr_decay_at`
      of training (CIFAR/TinyImageNet: /10 at 50% and 75%). The step is
      applied at the right step, not one epoch late as in the authors' code.
    * 'step_every': multiply by `lr_decay_factor` every
      `lr_decay_every_epochs` epochs (ImageNet/iNat: /10 every 30 epochs).
    * 'cosine': cosine decay from the base rate to 0 over training.
    * 'constant': the base rate throughout.
  An optional linear warm-up from 0 multiplies the schedule over the first
  `warmup_epochs`; decay boundaries stay where they are without warm-up.

  The arguments are named as the config keys they come from
  (`zipfls_jax.training.config`), so an error names the key to fix.

  Args:
    learning_rate: rate at step 0 (after warm-up), > 0.
    lr_schedule: one of `SCHEDULES`.
    steps_per_epoch: optimizer steps per epoch (> 0).
    num_epochs: length of training in epochs (> 0).
    warmup_epochs: linear warm-up length in epochs (>= 0).
    lr_decay_factor: multiplier applied at each step boundary (> 0).
    lr_decay_at: fractions of training in (0, 1), for 'step'.
    lr_decay_every_epochs: period for 'step_every' (> 0).

  Returns:
    An optax schedule: step (int array) -> float32 learning rate.
  """
  if lr_schedule not in SCHEDULES:
    raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {lr_schedule!r}.")
  for name, value in (("learning_rate", learning_rate), ("steps_per_epoch", steps_per_epoch),
                      ("num_epochs", num_epochs), ("lr_decay_factor", lr_decay_factor),
                      ("lr_decay_every_epochs", lr_decay_every_epochs)):
    if value <= 0:
      raise ValueError(f"{name} must be > 0, got {value}.")
  if warmup_epochs < 0:
    raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}.")
  if not all(0.0 < f < 1.0 for f in lr_decay_at):
    raise ValueError("lr_decay_at must hold fractions of training in (0, 1), "
                     f"got {tuple(lr_decay_at)}.")
  total_steps = int(round(num_epochs * steps_per_epoch))

  if lr_schedule == "step":
    boundaries = {int(round(f * total_steps)): lr_decay_factor for f in lr_decay_at}
    main = optax.piecewise_constant_schedule(learning_rate, boundaries)
  elif lr_schedule == "step_every":
    period = int(round(lr_decay_every_epochs * steps_per_epoch))
    if period < 1:
      raise ValueError(f"lr_decay_every_epochs={lr_decay_every_epochs} is less than one step "
                       f"of the {steps_per_epoch} per epoch.")
    main = optax.exponential_decay(learning_rate, transition_steps=period,
                                   decay_rate=lr_decay_factor, staircase=True)
  elif lr_schedule == "cosine":
    main = optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
  else:
    main = optax.constant_schedule(learning_rate)

  warmup_steps = int(round(warmup_epochs * steps_per_epoch))
  if warmup_steps == 0:
    return main
  # A factor rising from 0 to 1, not optax.join_schedules: joining restarts
  # the second schedule's count at the boundary, which would move the decay
  # steps by the warm-up and change a cosine's values.
  warmup = optax.linear_schedule(0.0, 1.0, warmup_steps)
  return lambda step: main(step) * warmup(step)


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
