"""The total loss of each method against NumPy, and its gradient across devices.

The references come from tests/reference.py (formulas of docs/method.md in float64
NumPy/SciPy). Per-device programs (shard_map, pmap) must give the loss and
the gradient of the global batch, including the correct-only masked mean.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import zipfls_jax
from tests import reference
from zipfls_jax.models import ModelOutput
from zipfls_jax.training.methods import label_smoothing as objective_lib
from zipfls_jax.training import parallel

N, C, K, D = 16, 7, 9, 5


def make_inputs(seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(N, C)).astype(np.float32) * 2
  labels = rng.integers(0, C, size=N).astype(np.int32)
  # Make about half the examples correct so the mask matters.
  logits[::2, :] -= 5.0 * np.eye(C)[labels[::2]] * -1
  votes = rng.integers(0, C, size=(N, K)).astype(np.int32)
  exits = tuple(rng.normal(size=(N, C)).astype(np.float32) for _ in range(2))
  return logits, labels, votes, exits


def numpy_loss(objective, logits, labels, votes, exits):
  ce = reference.cross_entropy(logits, labels)
  if objective.method == "ce":
    main = ce.mean()
  elif objective.method == "ls":
    soft = np.full((N, C), 1.0 / (C - 1))
    main = reference.smoothed_cross_entropy(logits, labels, soft, objective.ls_eps).mean()
  else:
    q = reference.targets(reference.counts(votes, C), labels, power=objective.target.power)
    kl = reference.kl_non_target(logits, labels, q)
    if objective.correct_only:
      mask = logits.argmax(-1) == labels
      kl_term = (kl * mask).sum() / max(mask.sum(), 1)
    else:
      kl_term = kl.mean()
    main = ce.mean() + objective.lam * kl_term
  exit_ce = sum(reference.cross_entropy(e, labels).mean() for e in exits)
  return main + objective.exit_weight * exit_ce


OBJECTIVES = [
    objective_lib.Objective(method="ce"),
    objective_lib.Objective(method="ls", ls_eps=0.2),
    objective_lib.Objective(method="zipf", lam=0.7,
                            target=zipfls_jax.TargetDistribution(power=1.3)),
    objective_lib.Objective(method="zipf", lam=0.5, correct_only=True, exit_weight=0.3),
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: f"{o.method}-{o.correct_only}")
def test_loss_matches_numpy(objective):
  logits, labels, votes, exits = make_inputs()
  out = ModelOutput(logits=jnp.asarray(logits), features=jnp.zeros((N, D)),
                    votes=jnp.asarray(votes), exit_logits=tuple(map(jnp.asarray, exits)))
  if not objective.exit_weight:
    out = out.replace(exit_logits=())
    exits = ()
  loss, parts = jax.jit(lambda o, y: objective_lib.compute_loss(objective, o, y))(
      out, jnp.asarray(labels))
  np.testing.assert_allclose(loss, numpy_loss(objective, logits, labels, votes, exits),
                             rtol=1e-5)
  np.testing.assert_allclose(parts["ce"], reference.cross_entropy(logits, labels).mean(),
                             rtol=1e-5)
  assert (float(parts["zipf"]) > 0) == (objective.method == "zipf")


def test_per_device_loss_and_gradient_equal_global():
  """Linear model logits = x @ w: jit on the global batch vs shard_map vs pmap."""
  objective = objective_lib.Objective(method="zipf", lam=0.5, correct_only=True,
                                      exit_weight=0.3)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(N, D)).astype(np.float32)
  w = rng.normal(size=(D, C)).astype(np.float32)
  labels = rng.integers(0, C, size=N).astype(np.int32)
  votes = rng.integers(0, C, size=(N, K)).astype(np.int32)

  def loss_fn(w, x, labels, votes, axis_name=None):
    logits = x @ w
    out = ModelOutput(logits=logits, features=x, votes=votes, exit_logits=(0.5 * logits,))
    return objective_lib.compute_loss(objective, out, labels, axis_name=axis_name)[0]

  def per_device(axis_name):
    def fn(w, x, labels, votes):
      loss, grad = jax.value_and_grad(loss_fn)(w, x, labels, votes, axis_name)
      return loss, jax.lax.pmean(grad, axis_name)
    return fn

  want_loss, want_grad = jax.jit(jax.value_and_grad(loss_fn))(w, x, labels, votes)
  # Half the examples correct or not, the masked mean must use the global count.
  mask = (x @ w).argmax(-1) == labels
  assert 0 < mask.sum() < N

  mesh = parallel.make_data_mesh()
  data = P(parallel.DATA_AXIS)
  sharded = jax.jit(jax.shard_map(per_device(parallel.DATA_AXIS), mesh=mesh,
                                  in_specs=(P(), data, data, data), out_specs=(P(), P())))
  got_loss, got_grad = sharded(w, x, labels, votes)
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)

  split = lambda a: a.reshape(8, N // 8, *a.shape[1:])
  p_loss, p_grad = jax.pmap(per_device("d"), axis_name="d", in_axes=(None, 0, 0, 0))(
      w, split(x), split(labels), split(votes))
  np.testing.assert_allclose(p_loss[0], want_loss, rtol=1e-5)
  np.testing.assert_allclose(p_grad[3], want_grad, rtol=1e-4, atol=1e-6)


def test_config_errors_name_the_key():
  with pytest.raises(ValueError, match=r"Unknown key\(s\) in config.loss: \['lamda'\]"):
    objective_lib.Objective.from_config({"method": "zipf", "lamda": 0.1})
  with pytest.raises(ValueError, match="loss.rank_by must be one of"):
    objective_lib.Objective(method="zipf", rank_by="features")
  with pytest.raises(ValueError, match="config.loss: `distribution` must be one of"):
    objective_lib.Objective.from_config({"method": "zipf", "distribution": "zipff"})
  # The distribution's values are checked once, by TargetDistribution; the
  # message still names the config key.
  with pytest.raises(ValueError, match="config.loss: `power` must be > 0, got nan"):
    objective_lib.Objective.from_config({"method": "zipf", "power": float("nan")})
  with pytest.raises(ValueError, match="config.loss.lam must be >= 0"):
    objective_lib.Objective.from_config({"method": "zipf", "lam": float("nan")})


def test_config_block_round_trips_and_lam_has_one_default():
  objective = objective_lib.Objective(
      method="zipf", rank_by="logits", target=zipfls_jax.TargetDistribution(
          "unbiased_zipf", power=2.0, upper_bound=30.0))
  assert objective_lib.Objective.from_config(objective.to_config()) == objective
  assert objective.to_config()["distribution"] == "unbiased_zipf"
  assert objective_lib.Objective().lam == zipfls_jax.DEFAULT_LAM
  from zipfls_jax.training import config as config_lib   # pylint: disable=g-import-not-at-top
  loss = config_lib.base_config().loss
  assert loss.lam == zipfls_jax.DEFAULT_LAM
  assert objective_lib.Objective.from_config(loss) == objective_lib.Objective()


def test_votes_missing_from_model_output_is_explained():
  out = ModelOutput(logits=jnp.zeros((2, C)), features=jnp.zeros((2, D)))
  with pytest.raises(ValueError, match="apply the model with votes=True"):
    objective_lib.compute_loss(objective_lib.Objective(method="zipf"), out,
                               jnp.zeros((2,), jnp.int32))
