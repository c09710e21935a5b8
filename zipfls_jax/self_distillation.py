"""The paper's label-smoothing and self-distillation baselines as pure losses.

Zipf's LS is compared with TF-KD, CS-KD, BAKE, DDGSD, BYOT, PS-KD, OLS and
BAN / plain knowledge distillation (docs/method.md section 4). Every one of
them is "cross-entropy + an extra term"; this module holds the extra terms
and the targets they need, in the style of `zipfls_jax.losses` and optax:

* one value per example (per pair for CS-KD), never reduced inside: callers
  take the mean. The two batch-level quantities (DDGSD's MMD and BYOT's
  feature distance) say so and take `axis_name` to stay exact across devices;
* hyperparameters keyword-only, with the values the paper's runs used in
  each docstring together with their source;
* `where=` (one bool per example) masks the computation: masked rows give 0
  and receive zero gradient, even if they hold NaN or inf, and they are left
  out of every batch statistic (BAKE's affinity, the MMD means, OLS's
  accumulator);
* targets carry no gradient;
* bad arguments raise ValueError / TypeError at trace time, naming them.

Which forward passes, batches and state a method needs (class-paired
batches, two views, exits, per-example stores) is the trainer's business;
these functions only see arrays. Stateful methods (PS-KD, OLS) get pure
pieces: PS-KD's targets from stored predictions, and OLS's class matrix as a
pytree (`OLSState`) with an update per step and a swap per epoch.

Must not import flax, optax or TensorFlow: `import zipfls_jax` stays light.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from jax.sharding import AxisType, NamedSharding, PartitionSpec

from zipfls_jax import validation
from zipfls_jax.ranks import topk_correct  # the package's one rule for "correct"


# --- argument checks (trace time) ---------------------------------------------

def _check_scalar(name: str, value) -> float:
  if isinstance(value, bool) or not (np.isscalar(value) or np.ndim(value) == 0):
    raise TypeError(f"`{name}` must be a Python scalar, got {type(value).__name__}.")
  try:
    return float(value)
  except (TypeError, jax.errors.ConcretizationTypeError):
    raise TypeError(f"`{name}` must be a concrete Python scalar (a hyperparameter), "
                    f"got a traced value.") from None


def _check_in(name: str, value, low: float, high: float, *, high_open: bool = False) -> float:
  value = _check_scalar(name, value)
  if not (low <= value < high if high_open else low <= value <= high):
    interval = f"[{low}, {high})" if high_open else f"[{low}, {high}]"
    raise ValueError(f"`{name}` must lie in {interval}, got {value}.")
  return value


def _check_positive(name: str, value) -> float:
  value = _check_scalar(name, value)
  if not value > 0:
    raise ValueError(f"`{name}` must be > 0, got {value}.")
  return value


def _check_logits(name: str, logits) -> int:
  validation.check_float(name, logits)
  return validation.check_num_classes(name, jnp.shape(logits))


def _check_batch_matrix(name: str, x) -> None:
  validation.check_float(name, x)
  if jnp.ndim(x) != 2:
    raise ValueError(f"`{name}` must be a (N, D) matrix, one row per example, got shape "
                     f"{tuple(jnp.shape(x))}.")


def _check_labels_for(logits_name: str, logits, labels) -> int:
  return validation.check_logits_labels(logits, labels, logits_name=logits_name)


# --- shared pieces --------------------------------------------------------------

def _float(x) -> jax.Array:
  """bf16/f16 computed in f32; f32 and f64 (x64 tests) kept."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _keep_rows(x: jax.Array, where: Optional[jax.Array]) -> jax.Array:
  """Masked rows replaced by 0 *before* any computation.

  Zeroing only the output would still send NaN through the backward pass
  (0 * d/dz of a NaN or inf row is NaN); with the input replaced, a masked
  row's gradient is exactly 0 whatever it held.
  """
  if where is None:
    return x
  return jnp.where(jnp.expand_dims(where, tuple(range(where.ndim, x.ndim))), x, 0)


def _explicit_sharding(x) -> Optional[NamedSharding]:
  """x's sharding if it lies on a mesh with Explicit axes (`jax.make_mesh`'s default)."""
  sharding = getattr(jax.typeof(x), "sharding", None)
  if (isinstance(sharding, NamedSharding) and not sharding.mesh.empty
      and AxisType.Explicit in sharding.mesh.axis_types):
    return sharding
  return None


def _apply_where(values: jax.Array, where: Optional[jax.Array]) -> jax.Array:
  return values if where is None else jnp.where(where, values, 0.0)


def _kl(p: jax.Array, log_q: jax.Array) -> jax.Array:
  """sum_c p_c (log p_c - log q_c) over the last axis; p carries no gradient.

  0 log 0 = 0, so a target that is exactly 0 somewhere (a one-hot) is fine.
  """
  return (xlogy(p, p) - p * log_q).sum(-1)


# --- generic distillation terms ---------------------------------------------------

def soft_cross_entropy(logits: jax.Array,
                       targets: jax.Array,
                       *,
                       temperature: float = 1.0,
                       where: Optional[jax.Array] = None) -> jax.Array:
  """Cross-entropy against soft targets: -sum_c t_c log_softmax(z / T)_c.

  No T^2 factor. The targets get no gradient. PS-KD and OLS use it at T = 1
  against their own targets (`ps_kd_targets`, `OLSState.matrix[y]`), BYOT
  at T = 3 against the final classifier (`byot_exit_loss`).

  Args:
    logits: (..., C) float logits.
    targets: (..., C) float target distributions (rows summing to 1).
    temperature: T > 0 dividing the logits.
    where: optional (...) bool; False rows give 0 and get no gradient.

  Returns:
    (...) per-example losses (float32 for bf16/f32 input).
  """
  _check_logits("logits", logits)
  validation.check_float("targets", targets)
  validation.check_same_shape("targets", targets, "logits", logits)
  temperature = _check_positive("temperature", temperature)
  validation.check_where(where, jnp.shape(logits)[:-1])
  z = _keep_rows(_float(logits), where)
  t = jax.lax.stop_gradient(_keep_rows(_float(targets), where))
  loss = -(t * jax.nn.log_softmax(z / temperature, axis=-1)).sum(-1)
  return _apply_where(loss, where)


def kd_loss(student_logits: jax.Array,
            teacher: jax.Array,
            *,
            temperature: float,
            teacher_is_probs: bool = False,
            where: Optional[jax.Array] = None) -> jax.Array:
  """Knowledge distillation at temperature T: T^2 KL(p_t || softmax(z_s / T)).

  p_t = softmax(teacher / T) for teacher logits, or `teacher` itself with
  `teacher_is_probs=True` (BAKE's ensembled targets, already at T). The
  teacher gets no gradient. The mean over the batch equals the PyTorch
  form `KLDivLoss(reduction='sum')(log_softmax(z_s / T), p_t) * T^2 / N`
  used by the CS-KD, BAKE and BAN code (Hinton et al. 2015;
  docs/method.md section 4).

  Args:
    student_logits: (..., C) float logits of the student.
    teacher: (..., C) float teacher logits, or probabilities at T.
    temperature: T > 0. CS-KD and BAKE use 4 (their papers' code), BAN 1.
    teacher_is_probs: whether `teacher` holds probabilities.
    where: optional (...) bool; False rows give 0 and get no gradient.

  Returns:
    (...) per-example losses.

  Example:
    >>> z = jnp.array([[2.0, 0.0, -1.0]]); t = jnp.array([[1.0, 1.0, 0.0]])
    >>> kd_loss(z, t, temperature=4.0).shape
    (1,)
  """
  _check_logits("student_logits", student_logits)
  validation.check_float("teacher", teacher)
  validation.check_same_shape("teacher", teacher, "student_logits", student_logits)
  temperature = _check_positive("temperature", temperature)
  validation.check_where(where, jnp.shape(student_logits)[:-1])
  z = _keep_rows(_float(student_logits), where)
  teacher = jax.lax.stop_gradient(_keep_rows(_float(teacher), where))
  target = teacher if teacher_is_probs else jax.nn.softmax(teacher / temperature, axis=-1)
  loss = temperature**2 * _kl(target, jax.nn.log_softmax(z / temperature, axis=-1))
  return _apply_where(loss, where)


def symmetric_kl_loss(logits1: jax.Array,
                      logits2: jax.Array,
                      *,
                      temperature: float = 1.0,
                      where: Optional[jax.Array] = None) -> jax.Array:
  """KL(sg(p1) || p2) + KL(sg(p2) || p1), p_i = softmax(logits_i / T).

  Each side is the other's target and gets no gradient through its own
  role as target, so d/d logits1 comes only from KL(sg(p2) || p1). No T^2
  factor. DDGSD's consistency term between two views of an image (Xu and
  Liu, AAAI 2019; T = 1).

  Returns:
    (...) per-example losses.
  """
  _check_logits("logits1", logits1)
  validation.check_float("logits2", logits2)
  validation.check_same_shape("logits2", logits2, "logits1", logits1)
  temperature = _check_positive("temperature", temperature)
  validation.check_where(where, jnp.shape(logits1)[:-1])
  log_p1 = jax.nn.log_softmax(_keep_rows(_float(logits1), where) / temperature, axis=-1)
  log_p2 = jax.nn.log_softmax(_keep_rows(_float(logits2), where) / temperature, axis=-1)
  p1, p2 = (jax.lax.stop_gradient(jnp.exp(x)) for x in (log_p1, log_p2))
  loss = _kl(p1, log_p2) + _kl(p2, log_p1)
  return _apply_where(loss, where)


def _masked_sum_and_count(x, where, axis_name):
  """(sum of the kept rows of (N, D) x, number of kept rows), summed across devices."""
  count = (jnp.float32(x.shape[0]) if where is None
           else where.sum(dtype=jnp.float32))
  total = x.sum(0)
  if axis_name is not None:
    total, count = jax.lax.psum((total, count), axis_name)
  return total, count


def linear_mmd(features1: jax.Array,
               features2: jax.Array,
               *,
               where: Optional[jax.Array] = None,
               axis_name=None) -> jax.Array:
  """Linear maximum mean discrepancy ||mean_i f1_i - mean_i f2_i||^2 (a scalar).

  A batch-level quantity (not a sum of per-example values): the means run
  over the examples kept by `where`. With `axis_name` (inside `shard_map` or
  `pmap`) the sums and counts are `psum`'d first, so every device returns
  the MMD of the global batch; under `jax.jit` on global arrays leave it
  None. DDGSD's feature term on pooled features (Xu and Liu, AAAI 2019,
  weight 5e-4 as third-party reimplementations use;
  docs/method.md section 4). With no kept example it is 0.

  Args:
    features1, features2: (N, D) float features of the two views.
    where: optional (N,) bool.
    axis_name: the mapped axis (or tuple of axes) of the batch, or None.

  Returns:
    A float scalar, identical on every device.
  """
  _check_batch_matrix("features1", features1)
  _check_batch_matrix("features2", features2)
  validation.check_same_shape("features2", features2, "features1", features1)
  validation.check_where(where, jnp.shape(features1)[:1])
  diff = _keep_rows(_float(features1), where) - _keep_rows(_float(features2), where)
  total, count = _masked_sum_and_count(diff, where, axis_name)
  mean = total / jnp.maximum(count, 1.0)
  return (mean * mean).sum()


def ddgsd_loss(logits1: jax.Array,
               logits2: jax.Array,
               features1: jax.Array,
               features2: jax.Array,
               *,
               kl_weight: float = 1.0,
               mmd_weight: float = 5e-4,
               where: Optional[jax.Array] = None,
               axis_name=None) -> jax.Array:
  """DDGSD's extra term for two augmentations of each image, per example.

      kl_weight * symmetric_kl(z1, z2) + mmd_weight * linear_mmd(f1, f2)

  The symmetric KL (T = 1, each side's target without gradient) is per
  example; the MMD is a statistic of the (global, with `axis_name`) batch
  and is added to every kept example's value, so that the mean over the
  kept examples (`masked_batch_mean(loss, where, axis_name=...)`, or
  `jnp.mean` without a mask) is exactly the DDGSD term and its gradient.
  The training objective adds CE(z1, y) + CE(z2, y). Xu and Liu,
  "Data-Distortion Guided Self-Distillation for Deep Neural Networks", AAAI
  2019 (no official code): kl_weight 1, mmd_weight 5e-4 as third-party
  reimplementations use (docs/method.md section 4).

  Args:
    logits1, logits2: (N, C) float logits of the two views.
    features1, features2: (N, D) float pooled features of the two views.
    kl_weight, mmd_weight: the weights (>= 0).
    where: optional (N,) bool.
    axis_name: the mapped axis (or tuple of axes) of the batch, or None.

  Returns:
    (N,) per-example values (0 where `where` is False).
  """
  _check_batch_matrix("logits1", logits1)
  _check_batch_matrix("features1", features1)
  if jnp.shape(features1)[0] != jnp.shape(logits1)[0]:
    raise ValueError(f"`features1` {tuple(jnp.shape(features1))} and `logits1` "
                     f"{tuple(jnp.shape(logits1))} must have the same number of rows.")
  kl_weight = _check_in("kl_weight", kl_weight, 0.0, np.inf)
  mmd_weight = _check_in("mmd_weight", mmd_weight, 0.0, np.inf)
  kl = symmetric_kl_loss(logits1, logits2, where=where)
  mmd = linear_mmd(features1, features2, where=where, axis_name=axis_name)
  return _apply_where(kl_weight * kl + mmd_weight * mmd, where)


# --- TF-KD ----------------------------------------------------------------------

def tf_kd_regularization_loss(logits: jax.Array,
                              labels: jax.Array,
                              *,
                              temperature: float,
                              multiplier: float,
                              correct_prob: float = 0.99,
                              where: Optional[jax.Array] = None) -> jax.Array:
  """TF-KD's regularization term against a hand-made "virtual teacher".

  v = correct_prob on y and (1 - correct_prob) / (C - 1) elsewhere;
  p_v = softmax(v / T). Per example:

      multiplier / C * sum_c p_v,c (log p_v,c - log_softmax(z)_c)

  (the student is NOT divided by T and there is no T^2). The 1 / C makes
  the batch mean equal TF-KD's code, PyTorch `KLDivLoss()` with its default
  reduction, which divides the sum over all N x C elements by N * C. The
  training objective is (1 - reg_alpha) CE + reg_alpha * term, as in the
  TF-KD paper and code (the Zipf authors' script ignores reg_alpha and adds
  the term to the full CE). Yuan et al., "Revisiting Knowledge Distillation
  via Label Smoothing Regularization", CVPR 2020, `loss_kd_regularization`
  in their code. The Zipf authors' values (docs/method.md section 4): CIFAR
  ResNet18 T=20, multiplier 100; CIFAR DenseNet121 T=40, multiplier 1;
  ResNet50 T=20, multiplier 1; reg_alpha 0.1 for all.

  Args:
    logits: (..., C) float logits.
    labels: (...) int labels.
    temperature: T > 0 softening the virtual teacher.
    multiplier: the term's scale (> 0).
    correct_prob: the virtual teacher's probability on y, in (0, 1).
    where: optional (...) bool; False rows give 0 and get no gradient.

  Returns:
    (...) per-example terms.
  """
  num_classes = _check_labels_for("logits", logits, labels)
  temperature = _check_positive("temperature", temperature)
  multiplier = _check_positive("multiplier", multiplier)
  correct_prob = _check_in("correct_prob", correct_prob, 0.0, 1.0)
  validation.check_where(where, jnp.shape(labels))
  z = _keep_rows(_float(logits), where)
  labels = _keep_rows(labels, where)
  # softmax(v / T) has two values only: a on y, b elsewhere.
  other_prob = (1.0 - correct_prob) / (num_classes - 1)
  gap = (correct_prob - other_prob) / temperature
  log_norm = np.logaddexp(gap, np.log(num_classes - 1.0))
  log_a, log_b = gap - log_norm, -log_norm
  a, b = np.exp(log_a), np.exp(log_b)
  log_q = jax.nn.log_softmax(z, axis=-1)
  log_q_label = jnp.take_along_axis(log_q, labels[..., None], axis=-1, mode="fill",
                                    fill_value=jnp.nan)[..., 0]
  # sum_c p_c log p_c is a constant; the cross term splits at the label.
  entropy_term = a * log_a + (num_classes - 1) * b * log_b
  cross = b * log_q.sum(-1) + (a - b) * log_q_label
  loss = multiplier / num_classes * (entropy_term - cross)
  return _apply_where(loss, where)


# --- CS-KD ----------------------------------------------------------------------

def cs_kd_loss(anchor_logits: jax.Array,
               friend_logits: jax.Array,
               *,
               temperature: float = 4.0,
               where: Optional[jax.Array] = None) -> jax.Array:
  """Class-wise self-knowledge distillation, one value per (anchor, friend) pair.

  T^2 KL(softmax(z_f / T) || softmax(z_a / T)), z_a the anchor's logits
  (which get the gradient) and z_f those of another image of the same
  class from a second forward pass (no gradient). The mean over the pairs
  equals the CS-KD code's `KLDivLoss(reduction='sum') * T^2 / (N / 2)`.
  Yun et al., "Regularizing Class-wise Predictions via Self-knowledge
  Distillation", CVPR 2020: T = 4; weight lambda 1 (CIFAR, TinyImageNet),
  3 (ResNet50) as the Zipf authors ran it (docs/method.md section 4). The
  pairs come from the class-paired sampler (`zipfls_jax.data.samplers`):
  anchors x[0::2], friends x[1::2].

  Args:
    anchor_logits: (..., C) float logits of the anchors.
    friend_logits: (..., C) float logits of their same-class friends.
    temperature: T > 0.
    where: optional (...) bool over pairs.

  Returns:
    (...) per-pair losses.
  """
  _check_logits("anchor_logits", anchor_logits)
  validation.check_float("friend_logits", friend_logits)
  validation.check_same_shape("friend_logits", friend_logits, "anchor_logits", anchor_logits)
  return kd_loss(anchor_logits, friend_logits, temperature=temperature, where=where)


# --- BAKE -----------------------------------------------------------------------

def bake_targets(features: jax.Array,
                 logits: jax.Array,
                 *,
                 omega: float,
                 temperature: float = 4.0,
                 where: Optional[jax.Array] = None,
                 axis_name=None) -> jax.Array:
  """BAKE's batch knowledge ensembles: soft targets from the batch's own predictions.

  With f the L2-normalised features and P = softmax(z / T) (rows per
  example), the affinity W = row-softmax(f f^T - 1e9 I) (no self-loops),
  and the targets propagate P through the batch:

      Q = (1 - omega) (I - omega W)^-1 P

  computed with a linear solve, not an inverse. Rows of Q sum to 1. No
  gradient flows into Q. Train with `kd_loss(z, Q, temperature=T,
  teacher_is_probs=True)`. Ge et al., "Self-distillation with Batch
  Knowledge Ensembling Improves ImageNet Classification", 2021, and its
  code's `knowledge_ensemble`: T = 4, lambda 1; omega 0.5 (CIFAR-100 with
  3 friends, ResNet50 with 1) or 0.9 (TinyImageNet with 1 friend), the
  batch built by the class-paired sampler (docs/method.md section 4).

  The affinity spans the whole batch:

  * under `jax.jit` on global (sharded) arrays, leave `axis_name` None:
    the arrays are already the global batch and XLA inserts the
    collectives;
  * under `shard_map` or `pmap`, pass the batch's mesh axis: each device
    `all_gather`s the normalised features and P of every device (an
    (N_global, D) and (N_global, C) array), builds the global W and solves
    the global system itself (the same small N_global x N_global solve on
    every device, no further communication), and returns the rows of its
    own examples. The result equals the single-device Q of the global
    batch, as the BAKE code's cross-GPU `all_gather` does.

  Examples with `where` False take no part: no one attends to them, and
  their own row of Q is their own P. An example with no other kept example
  in the batch also keeps its own P (BAKE's -1e9 diagonal gives the same
  for a batch of one).

  Args:
    features: (N, D) float pooled features (before the classifier).
    logits: (N, C) float logits.
    omega: propagation weight in [0, 1).
    temperature: T > 0 of P.
    where: optional (N,) bool.
    axis_name: the mapped axis (or tuple of axes) of the batch, or None.

  Returns:
    (N, C) float targets at temperature T, for this device's rows.
  """
  _check_batch_matrix("features", features)
  _check_batch_matrix("logits", logits)
  validation.check_num_classes("logits", jnp.shape(logits))
  if jnp.shape(features)[0] != jnp.shape(logits)[0]:
    raise ValueError(f"`features` {tuple(jnp.shape(features))} and `logits` "
                     f"{tuple(jnp.shape(logits))} must have the same number of rows.")
  omega = _check_in("omega", omega, 0.0, 1.0, high_open=True)
  temperature = _check_positive("temperature", temperature)
  validation.check_where(where, jnp.shape(logits)[:1])
  features = jax.lax.stop_gradient(_keep_rows(_float(features), where))
  logits = jax.lax.stop_gradient(_keep_rows(_float(logits), where))
  # torch.nn.functional.normalize: f / max(||f||, 1e-12).
  norm = jnp.sqrt((features * features).sum(-1, keepdims=True))
  f = features / jnp.maximum(norm, 1e-12)
  p = jax.nn.softmax(logits / temperature, axis=-1)
  keep = jnp.ones(f.shape[0], bool) if where is None else where
  num_local = f.shape[0]
  batch_sharding = _explicit_sharding(logits)
  if batch_sharding is not None:
    # Global arrays on an Explicit mesh: f f^T of two batch-sharded operands
    # has no legal sharding, so the (small) inputs are replicated first.
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())
    f, p, keep = (jax.sharding.reshard(x, replicated) for x in (f, p, keep))
  if axis_name is not None:
    f, p, keep = (jax.lax.all_gather(x, axis_name, tiled=True) for x in (f, p, keep))
  n = f.shape[0]
  eye = jnp.eye(n, dtype=bool)
  # -inf where BAKE has -1e9: identical after the softmax (exp underflows to
  # 0 either way), and it also drops the masked examples as neighbours.
  scores = jnp.where(eye | ~keep[None, :], -jnp.inf, f @ f.T)
  has_neighbour = jnp.any(jnp.isfinite(scores), axis=-1, keepdims=True) & keep[:, None]
  # A row with no neighbour (or a masked row) attends to itself only: W
  # stays row-stochastic, so Q's rows sum to 1 and such a row keeps its P.
  scores = jnp.where(has_neighbour, scores, jnp.where(eye, 0.0, -jnp.inf))
  w = jax.nn.softmax(scores, axis=-1)
  q = jnp.linalg.solve(jnp.eye(n, dtype=w.dtype) - omega * w, (1.0 - omega) * p)
  if axis_name is not None:
    start = jax.lax.axis_index(axis_name) * num_local
    q = jax.lax.dynamic_slice_in_dim(q, start, num_local, axis=0)
  if batch_sharding is not None:
    q = jax.sharding.reshard(q, batch_sharding)
  return jax.lax.stop_gradient(q)


# --- BYOT -----------------------------------------------------------------------

def byot_exit_loss(exit_logits: jax.Array,
                   final_logits: jax.Array,
                   labels: jax.Array,
                   *,
                   alpha: float = 0.3,
                   temperature: float = 3.0,
                   where: Optional[jax.Array] = None) -> jax.Array:
  """BYOT's loss for one intermediate exit, per example.

      (1 - alpha) CE(z_exit, y)
        + alpha * soft_CE(softmax(sg(z_final) / T), log_softmax(z_exit / T))

  a soft cross-entropy at T with no T^2 factor; the final classifier is
  the teacher and gets no gradient from it. The full objective is
  CE(z_final, y) + sum over the exits of this + beta * the feature term
  (`byot_feature_loss`). Zhang et al., "Be Your Own Teacher", ICCV 2019;
  values from the first author's code (pytorch-self-distillation-final),
  the paper gives none: alpha 0.3, T 3, beta 0.03
  (docs/method.md section 4).

  Args:
    exit_logits: (..., C) float logits of the exit.
    final_logits: (..., C) float logits of the final classifier.
    labels: (...) int labels.
    alpha: weight of the distillation part, in [0, 1].
    temperature: T > 0.
    where: optional (...) bool.

  Returns:
    (...) per-example losses.
  """
  _check_labels_for("exit_logits", exit_logits, labels)
  validation.check_float("final_logits", final_logits)
  validation.check_same_shape("final_logits", final_logits, "exit_logits", exit_logits)
  alpha = _check_in("alpha", alpha, 0.0, 1.0)
  temperature = _check_positive("temperature", temperature)
  validation.check_where(where, jnp.shape(labels))
  z = _keep_rows(_float(exit_logits), where)
  labels = _keep_rows(labels, where)
  teacher = jax.nn.softmax(jax.lax.stop_gradient(_keep_rows(_float(final_logits), where))
                           / temperature, axis=-1)
  log_q = jax.nn.log_softmax(z, axis=-1)
  ce = -jnp.take_along_axis(log_q, labels[..., None], axis=-1, mode="fill",
                            fill_value=jnp.nan)[..., 0]
  soft = -(teacher * jax.nn.log_softmax(z / temperature, axis=-1)).sum(-1)
  return _apply_where((1.0 - alpha) * ce + alpha * soft, where)


def byot_feature_loss(exit_features: jax.Array,
                      final_features: jax.Array,
                      *,
                      where: Optional[jax.Array] = None,
                      axis_name=None) -> jax.Array:
  """BYOT's feature term ||g_exit - sg(g_final)||_F over the batch (a scalar).

  The Frobenius norm of the (N, D) difference, not squared and not
  averaged, as `torch.dist` in the first author's code computes it: a
  batch-level quantity. With `axis_name` (inside `shard_map` / `pmap`) the
  squared sums are `psum`'d before the root, so every device gets the norm
  over the global batch (under `jax.jit` on global arrays leave it None).
  `exit_features` are the exit's pooled features after its bottleneck
  (mapped to the final feature size); the final ones get no gradient. The
  gradient at a zero difference is 0, not NaN. That code skips this term
  for the deepest exit and passes the exit's features through a learned
  linear adaptation first; both are the model's and trainer's choice.

  Args:
    exit_features, final_features: (N, D) float features.
    where: optional (N,) bool.
    axis_name: the mapped axis (or tuple of axes) of the batch, or None.

  Returns:
    A float scalar, identical on every device.
  """
  _check_batch_matrix("exit_features", exit_features)
  _check_batch_matrix("final_features", final_features)
  validation.check_same_shape("final_features", final_features, "exit_features", exit_features)
  validation.check_where(where, jnp.shape(exit_features)[:1])
  diff = (_keep_rows(_float(exit_features), where)
          - jax.lax.stop_gradient(_keep_rows(_float(final_features), where)))
  squared = (diff * diff).sum()
  if axis_name is not None:
    squared = jax.lax.psum(squared, axis_name)
  positive = squared > 0
  # sqrt'(0) is inf: take the root of a safe value and select (the double-where trick).
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


# --- PS-KD ----------------------------------------------------------------------

def ps_kd_alpha(epoch, *, num_epochs: int, alpha_final: float = 0.8) -> jax.Array:
  """PS-KD's weight of the past predictions: alpha_T * (t + 1) / T_epochs.

  `epoch` t counts from 0 and may be traced (e.g. step // steps_per_epoch).
  Kim et al., "Self-Knowledge Distillation with Progressive Refinement of
  Targets", ICCV 2021, official code (lgcnsai/PS-KD-Pytorch): alpha_T 0.8.
  """
  if isinstance(num_epochs, bool) or not isinstance(num_epochs, (int, np.integer)):
    raise TypeError(f"`num_epochs` must be an int, got {type(num_epochs).__name__}.")
  if num_epochs < 1:
    raise ValueError(f"`num_epochs` must be >= 1, got {num_epochs}.")
  alpha_final = _check_in("alpha_final", alpha_final, 0.0, 1.0)
  return alpha_final * (jnp.asarray(epoch, jnp.float32) + 1.0) / num_epochs


def ps_kd_targets(labels: jax.Array,
                  previous_predictions: jax.Array,
                  *,
                  epoch,
                  num_epochs: int,
                  alpha_final: float = 0.8) -> jax.Array:
  """PS-KD's targets: (1 - a_t) onehot(y) + a_t p_prev, no gradient.

  p_prev is the softmax this model gave the same example during the
  previous epoch's training pass (looked up by a stable example index; the
  store is the trainer's). In epoch 0 there is none: the official code
  stores the one-hot labels, so the target is the one-hot label whatever
  `previous_predictions` holds. a_t = `ps_kd_alpha(epoch)`. Train with
  `soft_cross_entropy(z, targets)`, which replaces the plain CE. Kim et
  al., ICCV 2021 (docs/method.md section 4).

  Args:
    labels: (...) int labels.
    previous_predictions: (..., C) float probabilities from the last epoch.
    epoch: the current epoch t >= 0 (int, may be traced).
    num_epochs: the run's number of epochs.
    alpha_final: alpha_T, in [0, 1].

  Returns:
    (..., C) float targets; rows sum to 1 when the stored rows do.
  """
  _check_labels_for("previous_predictions", previous_predictions, labels)
  alpha = ps_kd_alpha(epoch, num_epochs=num_epochs, alpha_final=alpha_final)
  num_classes = previous_predictions.shape[-1]
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=_float(previous_predictions).dtype)
  previous = jnp.where(jnp.asarray(epoch) == 0, one_hot, _float(previous_predictions))
  return jax.lax.stop_gradient((1.0 - alpha) * one_hot + alpha * previous)


# --- OLS ------------------------------------------------------------------------

class OLSState(NamedTuple):
  """Online label smoothing's class matrix, as a checkpointable pytree.

  Attributes:
    matrix: (C, C) S^{t-1}, row y the soft label of class y used in this
      epoch (all zeros in the first epoch).
    accumulator: (C, C) sum of softmax(z) over this epoch's correctly
      classified examples, by label.
    counts: (C,) the number of those examples per label.
  """
  matrix: jax.Array
  accumulator: jax.Array
  counts: jax.Array


def ols_init(num_classes: int, dtype=jnp.float32) -> OLSState:
  """S^0 = 0 (the first epoch's loss is then 0.5 CE) and empty accumulators."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
    raise TypeError(f"`num_classes` must be an int, got {type(num_classes).__name__}.")
  if num_classes < 2:
    raise ValueError(f"`num_classes` must be >= 2, got {num_classes}.")
  zeros = jnp.zeros((num_classes, num_classes), dtype)
  return OLSState(zeros, zeros, jnp.zeros((num_classes,), dtype))


def _check_ols_state(state, num_classes: int) -> None:
  if not isinstance(state, OLSState):
    raise TypeError(f"`state` must be an OLSState (from `ols_init`), got "
                    f"{type(state).__name__}.")
  for name, value, shape in (("matrix", state.matrix, (num_classes, num_classes)),
                             ("accumulator", state.accumulator, (num_classes, num_classes)),
                             ("counts", state.counts, (num_classes,))):
    if jnp.shape(value) != shape:
      raise ValueError(f"`state.{name}` must have shape {shape} for C = {num_classes} "
                       f"classes (those of `logits`), got {tuple(jnp.shape(value))}.")


def ols_loss(logits: jax.Array,
             labels: jax.Array,
             state: OLSState,
             *,
             where: Optional[jax.Array] = None) -> jax.Array:
  """Online label smoothing, per example: 0.5 CE(z, y) + 0.5 soft_CE(S[y], z).

  S = `state.matrix`, the previous epoch's matrix (no gradient). This is
  the whole loss, not an extra term. Zhang et al., "Delving Deep into
  Label Smoothing", IEEE TIP 2021, official CIFAR script
  (zhangchbin/OnlineLabelSmoothing): weights 0.5 / 0.5, T = 1
  (docs/method.md section 4). Update the state with `ols_update` in the
  same step and `ols_next_epoch` at each epoch's end.

  Args:
    logits: (..., C) float logits.
    labels: (...) int labels.
    state: the `OLSState`.
    where: optional (...) bool.

  Returns:
    (...) per-example losses.
  """
  num_classes = _check_labels_for("logits", logits, labels)
  _check_ols_state(state, num_classes)
  validation.check_where(where, jnp.shape(labels))
  z = _keep_rows(_float(logits), where)
  labels = _keep_rows(labels, where)
  log_q = jax.nn.log_softmax(z, axis=-1)
  soft = jnp.take(jax.lax.stop_gradient(state.matrix).astype(log_q.dtype), labels, axis=0,
                  mode="fill", fill_value=jnp.nan)
  ce = -jnp.take_along_axis(log_q, labels[..., None], axis=-1, mode="fill",
                            fill_value=jnp.nan)[..., 0]
  return _apply_where(0.5 * ce - 0.5 * (soft * log_q).sum(-1), where)


def ols_update(state: OLSState,
               logits: jax.Array,
               labels: jax.Array,
               *,
               where: Optional[jax.Array] = None,
               axis_name=None) -> OLSState:
  """Adds this step's correctly classified examples to the accumulator.

  For every example with argmax(z) = y (the first maximum wins a tie):
  accumulator[y] += softmax(z), counts[y] += 1. No gradient. With
  `axis_name` (inside `shard_map` / `pmap`) each device's additions are
  `psum`'d, so every device's state stays identical and equal to the global
  batch's: one C x C all-reduce per step (40 KB at C = 100, 400 MB at
  iNat21's 10,000 classes, where `jax.jit` on global arrays with
  `axis_name` None lets XLA choose). Rows whose label is out of range are
  dropped.

  Args:
    state: the `OLSState`.
    logits: (N, C) float logits of the step (before its update).
    labels: (N,) int labels.
    where: optional (N,) bool; False rows are not counted.
    axis_name: the mapped axis (or tuple of axes) of the batch, or None.

  Returns:
    The updated `OLSState` (`matrix` unchanged).
  """
  num_classes = _check_labels_for("logits", logits, labels)
  if jnp.ndim(logits) != 2:
    raise ValueError(f"`logits` must be (N, C), got shape {tuple(jnp.shape(logits))}.")
  _check_ols_state(state, num_classes)
  validation.check_where(where, jnp.shape(labels))
  z = jax.lax.stop_gradient(_keep_rows(_float(logits), where))
  counted = topk_correct(z, labels)   # False for an out-of-range label
  if where is not None:
    counted &= where
  probs = jnp.where(counted[:, None], jax.nn.softmax(z, axis=-1), 0.0)
  safe = jnp.where(counted, labels, 0)
  batch_sharding = _explicit_sharding(labels)
  if batch_sharding is not None:
    # Global arrays on an Explicit mesh: a scatter of batch-sharded rows into
    # a replicated matrix cannot infer its sharding; gather the (N, C) rows.
    replicated = NamedSharding(batch_sharding.mesh, PartitionSpec())
    probs, safe, counted = (jax.sharding.reshard(x, replicated) for x in (probs, safe, counted))
  added = jnp.zeros_like(state.accumulator).at[safe].add(probs.astype(state.accumulator.dtype))
  added_counts = jnp.zeros_like(state.counts).at[safe].add(counted.astype(state.counts.dtype))
  if axis_name is not None:
    added, added_counts = jax.lax.psum((added, added_counts), axis_name)
  return OLSState(state.matrix, state.accumulator + added, state.counts + added_counts)


def ols_next_epoch(state: OLSState) -> OLSState:
  """Epoch end: S^t = accumulator / counts by row (uniform 1/C where count is 0).

  Then the accumulator and counts restart from zero. As the official CIFAR
  script does (docs/method.md section 4).
  """
  if not isinstance(state, OLSState):
    raise TypeError(f"`state` must be an OLSState (from `ols_init`), got "
                    f"{type(state).__name__}.")
  num_classes = state.counts.shape[-1]
  counts = state.counts[:, None]
  matrix = jnp.where(counts > 0, state.accumulator / jnp.where(counts > 0, counts, 1.0),
                     1.0 / num_classes).astype(state.matrix.dtype)
  return OLSState(matrix, jnp.zeros_like(state.accumulator), jnp.zeros_like(state.counts))
