"""The self-distillation baselines as training methods, on a tiny dense network.

Each method's total loss is checked against float64 NumPy written from its
formula (docs/method.md section 4), with the network's forward pass redone in
NumPy from the same parameters; then each trains under the mesh step and
the pmap step to the same state, and lowers its loss on a fixed batch. The
method interface itself is checked: passes, BatchNorm statistics updated
once per pass, a friend pass without gradient, the epoch-boundary update of
a stateful method, and the refusals that name config keys.
"""
import dataclasses
import functools

import flax.jax_utils
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from zipfls_jax import training
from zipfls_jax.models import ModelOutput
from zipfls_jax.training import config as config_lib
from zipfls_jax.training import methods

N, C, D_IN, D = 16, 5, 6, 4


class TinyNet(nn.Module):
  """x -> h = tanh(x W0) -> features tanh(h W1) -> logits; exits from h.

  `exits`: two BYOT-like exits, each mapping h to D features and then C
  logits. `batch_norm`: a BatchNorm on the input (for the statistics test).
  """
  exits: bool = False
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x, *, train: bool, votes: bool = False):
    del votes
    x = x.reshape(x.shape[0], -1)
    if self.batch_norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(x)
    h = jnp.tanh(nn.Dense(D, name="hidden")(x))
    features = jnp.tanh(nn.Dense(D, name="features")(h))
    logits = nn.Dense(C, name="head")(features)
    exit_logits, exit_features = (), ()
    if self.exits:
      exit_features = tuple(jnp.tanh(nn.Dense(D, name=f"exit{k}_features")(h)) for k in (1, 2))
      exit_logits = tuple(nn.Dense(C, name=f"exit{k}_head")(g)
                          for k, g in zip((1, 2), exit_features))
    return ModelOutput(logits=logits, features=features, exit_logits=exit_logits,
                       exit_features=exit_features)


def numpy_forward(params, x):
  """TinyNet (no BatchNorm) in float64 NumPy: (logits, features, exit logits, exit features)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  dense = lambda name, v: v @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
  x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
  h = np.tanh(dense("hidden", x))
  features = np.tanh(dense("features", h))
  logits = dense("head", features)
  exit_features = [np.tanh(dense(f"exit{k}_features", h)) for k in (1, 2) if f"exit{k}_head" in p]
  exit_logits = [dense(f"exit{k}_head", g) for k, g in zip((1, 2), exit_features)]
  return logits, features, exit_logits, exit_features


def log_softmax(z):
  return z - special.logsumexp(z, axis=-1, keepdims=True)


def ce(z, y):
  return -log_softmax(z)[np.arange(len(y)), y]


def kl(p, log_q):
  return (special.xlogy(p, p) - p * log_q).sum(-1)


def reference_loss(method, params, batch):
  """The method's total loss, written from its formula."""
  x, y = batch["image"], batch["label"]
  if isinstance(method, methods.TFKD):
    z, *_ = numpy_forward(params, x)
    v = np.full((len(y), C), (1 - method.correct_prob) / (C - 1))
    v[np.arange(len(y)), y] = method.correct_prob
    p_v = special.softmax(v / method.temperature, axis=-1)
    term = method.multiplier * kl(p_v, log_softmax(z)) / C
    return (1 - method.reg_alpha) * ce(z, y).mean() + method.reg_alpha * term.mean()
  if isinstance(method, methods.CSKD):
    z_a, *_ = numpy_forward(params, x[0::2])
    z_f, *_ = numpy_forward(params, x[1::2])
    t = method.temperature
    term = t**2 * kl(special.softmax(z_f / t, axis=-1), log_softmax(z_a / t))
    return ce(z_a, y[0::2]).mean() + method.weight * term.mean()
  if isinstance(method, methods.BAKE):
    z, f, *_ = numpy_forward(params, x)
    t, omega = method.temperature, method.omega
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    scores = f @ f.T
    np.fill_diagonal(scores, -np.inf)
    w = special.softmax(scores, axis=-1)
    q = (1 - omega) * np.linalg.inv(np.eye(len(y)) - omega * w) @ special.softmax(z / t, axis=-1)
    term = t**2 * kl(q, log_softmax(z / t))
    return ce(z, y).mean() + method.weight * term.mean()
  if isinstance(method, methods.DDGSD):
    z1, f1, *_ = numpy_forward(params, x)
    z2, f2, *_ = numpy_forward(params, batch["image2"])
    p1, p2 = special.softmax(z1, axis=-1), special.softmax(z2, axis=-1)
    sym = kl(p1, log_softmax(z2)) + kl(p2, log_softmax(z1))
    mmd = ((f1.mean(0) - f2.mean(0)) ** 2).sum()
    return (ce(z1, y).mean() + ce(z2, y).mean() + method.kl_weight * sym.mean()
            + method.mmd_weight * mmd)
  if isinstance(method, methods.BYOT):
    z, f, exit_logits, exit_features = numpy_forward(params, x)
    t, a = method.temperature, method.alpha
    teacher = special.softmax(z / t, axis=-1)
    total = ce(z, y).mean()
    for z_i, g_i in zip(exit_logits, exit_features):
      soft = -(teacher * log_softmax(z_i / t)).sum(-1)
      total += ((1 - a) * ce(z_i, y) + a * soft).mean()
      total += method.beta * np.sqrt(((g_i - f) ** 2).sum())
    return total
  raise AssertionError(method)


# Hyperparameters away from the defaults, so a swapped or ignored one shows.
METHODS = {
    "tf_kd": methods.TFKD(temperature=3.0, multiplier=7.0, reg_alpha=0.3, correct_prob=0.9),
    "cs_kd": methods.CSKD(temperature=2.0, weight=1.5),
    "bake": methods.BAKE(temperature=2.0, weight=0.7, omega=0.6, friends=1),
    "ddgsd": methods.DDGSD(kl_weight=0.8, mmd_weight=0.3),
    "byot": methods.BYOT(alpha=0.4, beta=0.2, temperature=2.5),
}


def make_batch(seed=0):
  rng = np.random.default_rng(seed)
  # Pairs of one class in rows 2i, 2i + 1, as the class-paired stream gives them.
  labels = np.repeat(rng.integers(0, C, size=N // 2), 2).astype(np.int32)
  return {"image": rng.normal(size=(N, D_IN)).astype(np.float32),
          "image2": rng.normal(size=(N, D_IN)).astype(np.float32),
          "label": labels}


def init_params(model, seed=0):
  return model.init(jax.random.key(seed), jnp.zeros((1, D_IN)), train=False)


@functools.partial(jax.jit, static_argnums=(0, 1))
def method_loss(method, model, variables, batch):
  forward = methods.Forward(model, variables["params"], variables.get("batch_stats", {}),
                            jax.random.key(0))
  result = method.loss(forward, batch, {})
  return result.loss, result.parts, forward.calls


@pytest.mark.parametrize("name", list(METHODS))
def test_loss_matches_numpy_and_declares_its_passes(name):
  method = METHODS[name]
  model = TinyNet(exits=name == "byot")
  variables = init_params(model)
  batch = make_batch()
  loss, parts, calls = method_loss(method, model, variables, batch)
  np.testing.assert_allclose(float(loss), reference_loss(method, variables["params"], batch),
                             rtol=2e-5, atol=1e-6)
  assert float(parts["loss"]) == float(loss)
  assert calls == method.forward_passes


def test_cs_kd_friends_get_no_gradient_and_anchors_do():
  method, model = METHODS["cs_kd"], TinyNet()
  variables, batch = init_params(model), make_batch()
  grad = jax.jit(jax.grad(lambda images: method_loss(
      method, model, variables, dict(batch, image=images))[0]))(batch["image"])
  grad = np.asarray(grad)
  assert np.all(grad[1::2] == 0.0)
  assert np.all(np.abs(grad[0::2]).sum(-1) > 0)


def test_each_pass_updates_batch_norm_statistics_in_turn():
  # CS-KD's two passes: the running mean moves twice, anchors then friends,
  # mean <- 0.9 mean + 0.1 batch mean, as two PyTorch forward passes do.
  method, model = METHODS["cs_kd"], TinyNet(batch_norm=True)
  variables, batch = init_params(model), make_batch()

  @jax.jit
  def statistics_after_the_step(variables, batch):
    forward = methods.Forward(model, variables["params"], variables["batch_stats"],
                              jax.random.key(0))
    method.loss(forward, batch, {})
    return forward.batch_stats

  stats = statistics_after_the_step(variables, batch)
  x = batch["image"].astype(np.float64)
  expected = 0.9 * (0.1 * x[0::2].mean(0)) + 0.1 * x[1::2].mean(0)
  np.testing.assert_allclose(np.asarray(stats["bn"]["mean"]), expected, rtol=1e-5, atol=1e-6)


@functools.lru_cache(maxsize=None)
def _optimizer():
  schedule = training.create_learning_rate_schedule(
      learning_rate=0.5, lr_schedule="constant", steps_per_epoch=10, num_epochs=1)
  return schedule, training.create_optimizer(schedule, momentum=0.0)


def _fresh_state(model, mesh=None):
  schedule, tx = _optimizer()
  init = functools.partial(training.create_train_state, model=model, tx=tx,
                           image_shape=(1, 1, D_IN))
  if mesh is None:
    return init(jax.random.key(0))
  return jax.jit(init, out_shardings=training.replicated(mesh))(jax.random.key(0))


@pytest.mark.parametrize("name", list(METHODS))
def test_trains_under_mesh_and_pmap_to_the_same_state_and_lowers_its_loss(name):
  method = METHODS[name]
  model = TinyNet(exits=name == "byot")
  schedule, tx = _optimizer()
  batch = make_batch(1)
  batch = {k: v.reshape(N, 1, 1, D_IN) if k.startswith("image") else v for k, v in batch.items()}

  mesh = training.make_data_mesh()
  step = training.compile_train_step(model, tx, method, mesh, learning_rate_fn=schedule)
  state, sharded = _fresh_state(model, mesh), training.shard_batch(batch, mesh)
  mesh_losses = []
  for _ in range(4):
    state, metrics = step(state, sharded)
    mesh_losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(mesh_losses)) and mesh_losses[-1] < mesh_losses[0]

  pmapped = training.pmap_train_step(model, tx, method, learning_rate_fn=schedule)
  pstate = flax.jax_utils.replicate(_fresh_state(model))
  per_device = jax.tree.map(lambda a: a.reshape(8, N // 8, *a.shape[1:]), batch)
  pmap_losses = []
  for _ in range(4):
    pstate, pmetrics = pmapped(pstate, per_device)
    pmap_losses.append(float(pmetrics["loss"][0]))
  np.testing.assert_allclose(pmap_losses, mesh_losses, rtol=1e-4, atol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6),
               jax.device_get(state.params),
               jax.device_get(flax.jax_utils.unreplicate(pstate).params))


@dataclasses.dataclass(frozen=True)
class Counting(methods.Method):
  """A stateful method for the interface: counts examples, and epochs at their ends."""
  name = "counting"

  def init_state(self, num_classes):
    return {"examples": jnp.zeros((), jnp.int32), "epochs": jnp.zeros((), jnp.int32),
            "seen_this_epoch": jnp.zeros((), jnp.int32)}

  def loss(self, forward, batch, state, *, key=None, axis_name=None):
    output = forward(batch["image"])
    ce = methods.base.cross_entropy(output.logits, batch["label"], axis_name)
    count = batch["label"].shape[0]
    if axis_name is not None:
      count = jax.lax.psum(count, axis_name)
    state = dict(state, examples=state["examples"] + count,
                 seen_this_epoch=state["seen_this_epoch"] + count)
    return methods.MethodOutput(ce, {"loss": ce, "ce": ce}, output.logits, batch["label"], state)

  def end_epoch(self, state):
    return dict(state, epochs=state["epochs"] + 1, seen_this_epoch=jnp.zeros((), jnp.int32))


def test_a_stateful_method_carries_its_state_and_updates_it_at_epoch_ends():
  method, model = Counting(), TinyNet()
  schedule, tx = _optimizer()
  mesh = training.make_data_mesh()
  with pytest.raises(ValueError, match="steps_per_epoch"):
    training.compile_train_step(model, tx, method, mesh)
  step = training.compile_train_step(model, tx, method, mesh, steps_per_epoch=2,
                                     batch_norm="per_device")
  init = functools.partial(training.create_train_state, model=model, tx=tx,
                           image_shape=(1, 1, D_IN), method_state=method.init_state(C))
  state = jax.jit(init, out_shardings=training.replicated(mesh))(jax.random.key(0))
  batch = make_batch()
  batch = training.shard_batch(dict(image=batch["image"].reshape(N, 1, 1, D_IN),
                                    label=batch["label"]), mesh)
  for _ in range(5):
    state, _ = step(state, batch)
  assert jax.device_get(state.method_state) == {"examples": 5 * N, "epochs": 2,
                                                "seen_this_epoch": N}


def _config(method, **changes):
  config = config_lib.base_config()
  config.loss.method = method
  config.update_from_flattened_dict(changes)
  return config


def test_bad_combinations_are_refused_naming_the_config_keys():
  cs_kd = methods.from_config(_config("cs_kd").loss)
  with pytest.raises(ValueError, match=r"config\.batch_size.*groups of 2.*per device"):
    cs_kd.check_run(batch_size=24, device_count=8, exits=False, exit_type="linear")
  cs_kd.check_run(batch_size=16, device_count=8, exits=False, exit_type="linear")
  bake = methods.from_config(_config("bake", **{"loss.bake.friends": 3}).loss)
  assert bake.data_needs.friends == 3
  with pytest.raises(ValueError, match="groups of 4"):
    bake.check_run(batch_size=16, device_count=8, exits=False, exit_type="linear")
  byot = methods.from_config(_config("byot").loss)
  with pytest.raises(ValueError, match=r"config\.exits=True and config\.exit_type='bottleneck'"):
    byot.check_run(batch_size=16, device_count=8, exits=True, exit_type="linear")
  assert methods.from_config(_config("ddgsd").loss).data_needs.views == 2
  with pytest.raises(ValueError, match=r"config\.loss\.method must be one of .*got 'cskd'"):
    methods.from_config(_config("cskd").loss)
  with pytest.raises(ValueError, match=r"config\.loss\.cs_kd: `temperature` must be > 0"):
    methods.from_config(_config("cs_kd", **{"loss.cs_kd.temperature": 0.0}).loss)
  with pytest.raises(ValueError, match=r"config\.loss\.tf_kd: reg_alpha must lie in \[0, 1\]"):
    methods.from_config(_config("tf_kd", **{"loss.tf_kd.reg_alpha": 1.5}).loss)
  with pytest.raises(ValueError, match=r"config\.loss\.bake sets \['omega'\].*'cs_kd'"):
    methods.from_config(_config("cs_kd", **{"loss.bake.omega": 0.9}).loss)
  with pytest.raises(ValueError, match=r"config\.loss\.exit_weight=1\.0 .*'byot'"):
    methods.from_config(_config("byot", **{"loss.exit_weight": 1.0}).loss)
  with pytest.raises(ValueError, match=r"config\.loss: `power` must be > 0"):
    methods.from_config(_config("cs_kd", **{"loss.power": -1.0}).loss)


def test_the_loss_family_still_reads_its_flat_keys_and_skips_the_blocks():
  method = methods.from_config(_config("zipf", **{"loss.lam": 0.3}).loss)
  assert isinstance(method, training.Objective)
  assert (method.name, method.lam, method.model_needs.votes) == ("zipf", 0.3, True)
  assert method.data_needs == methods.DataNeeds() and method.forward_passes == 1


def test_ols_matrix_and_loss_follow_numpy_over_two_epochs():
  # Two epochs of two steps each, then one step of the third: S^0 = 0,
  # S^1 and S^2 from the correct predictions of epochs 0 and 1, by label.
  method, model = methods.OLS(), TinyNet()
  schedule, tx = _optimizer()
  mesh = training.make_data_mesh()
  step = training.compile_train_step(model, tx, method, mesh, steps_per_epoch=2,
                                     learning_rate_fn=schedule)
  init = functools.partial(training.create_train_state, model=model, tx=tx,
                           image_shape=(1, 1, D_IN), method_state=method.init_state(C))
  state = jax.jit(init, out_shardings=training.replicated(mesh))(jax.random.key(0))
  batches = [make_batch(seed) for seed in range(5)]
  matrix = np.zeros((C, C))
  accumulator, counts = np.zeros((C, C)), np.zeros(C)
  for i, batch in enumerate(batches):
    params = jax.device_get(state.params)
    z, *_ = numpy_forward(params, batch["image"])
    y = batch["label"]
    expected_loss = (0.5 * ce(z, y) - 0.5 * (matrix[y] * log_softmax(z)).sum(-1)).mean()
    image = batch["image"].reshape(N, 1, 1, D_IN)
    state, metrics = step(state, training.shard_batch(dict(image=image, label=y), mesh))
    np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=2e-5, atol=1e-6)
    correct = z.argmax(-1) == y
    np.add.at(accumulator, y[correct], special.softmax(z[correct], axis=-1))
    np.add.at(counts, y[correct], 1)
    if i % 2 == 1:
      matrix = np.where(counts[:, None] > 0, accumulator / np.maximum(counts, 1)[:, None], 1 / C)
      accumulator, counts = np.zeros((C, C)), np.zeros(C)
    got = jax.device_get(state.method_state)
    np.testing.assert_allclose(got.matrix, matrix, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.accumulator, accumulator, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got.counts, counts)
  assert 0 < counts.sum() < N   # the last step counted some examples, not all: the rule matters


class IndexNet(nn.Module):
  """Logits that encode the example: sin(w * index * (c + 1)), index in the input."""

  @nn.compact
  def __call__(self, x, *, train: bool, votes: bool = False):
    del train, votes
    w = self.param("w", nn.initializers.ones, ())
    index = x.reshape(x.shape[0], -1)[:, :1]
    logits = 3.0 * jnp.sin(w * index * jnp.arange(1, C + 1))
    return ModelOutput(logits=logits, features=logits)


def index_logits(index):
  return 3.0 * np.sin(np.asarray(index, np.float64)[:, None] * np.arange(1, C + 1))


@pytest.mark.parametrize("batch_norm", ["sync", "per_device"])
def test_ps_kd_store_gives_every_example_its_own_previous_prediction(batch_norm):
  # 24 examples, 3 steps of 8 per epoch, a new order each epoch; a learning
  # rate of 0 keeps each example's prediction a fixed function of its index,
  # so any row mix-up in the store shows in the targets and the loss.
  num_examples, batch, epochs = 24, 8, 4
  method = methods.PSKD(alpha_final=0.8, num_epochs=epochs, store_dtype="float32")
  model, tx = IndexNet(), optax_sgd_zero()
  mesh = training.make_data_mesh()
  step = training.compile_train_step(model, tx, method, mesh, steps_per_epoch=3,
                                     batch_norm=batch_norm)
  init = functools.partial(training.create_train_state, model=model, tx=tx,
                           image_shape=(1, 1, 1),
                           method_state=method.init_state(C, num_examples))
  state = jax.jit(init, out_shardings=training.replicated(mesh))(jax.random.key(0))
  rng = np.random.default_rng(0)
  labels_of = rng.integers(0, C, size=num_examples).astype(np.int32)
  probs = special.softmax(index_logits(np.arange(num_examples)), axis=-1)
  for epoch in range(2):
    order = rng.permutation(num_examples)
    for s in range(3):
      index = order[s * batch:(s + 1) * batch].astype(np.int32)
      y = labels_of[index]
      a = 0.8 * (epoch + 1) / epochs
      onehot = np.eye(C)[y]
      targets = onehot if epoch == 0 else (1 - a) * onehot + a * probs[index]
      expected = -(targets * log_softmax(index_logits(index))).sum(-1).mean()
      feed = dict(image=index.astype(np.float32).reshape(batch, 1, 1, 1), label=y, index=index)
      state, metrics = step(state, training.shard_batch(feed, mesh))
      np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    got = jax.device_get(state.method_state)
    assert int(got["epoch"]) == epoch + 1
    np.testing.assert_allclose(got["store"], probs, rtol=1e-5, atol=1e-7)


def optax_sgd_zero():
  import optax  # pylint: disable=g-import-not-at-top
  return optax.sgd(0.0)


def test_ps_kd_bfloat16_store_moves_targets_by_at_most_its_rounding():
  # The default store keeps predictions in bfloat16 (8 bits of mantissa):
  # each target entry a * p moves by at most a * p * 2^-8.
  probs = special.softmax(np.random.default_rng(1).normal(size=(64, 100)) * 3, axis=-1)
  stored = np.asarray(jnp.asarray(probs, jnp.bfloat16).astype(jnp.float32), np.float64)
  assert np.all(np.abs(stored - probs) <= probs * 2.0**-8)
  method = methods.PSKD()
  assert method.init_state(100, 50_000)["store"].dtype == jnp.bfloat16
  assert method.init_state(100, 50_000)["store"].nbytes == 50_000 * 100 * 2   # 10 MB


def test_ban_distils_its_frozen_teacher_as_numpy_says():
  # Teacher: the same network with other weights, in eval mode.
  model = TinyNet()
  student, teacher = init_params(model, seed=0), init_params(model, seed=1)
  shapes = jax.eval_shape(lambda: teacher)
  method = methods.BAN(temperature=2.0, weight=0.7).with_teacher(model, shapes)
  batch = make_batch()

  @jax.jit
  def loss_and_grad(variables, teacher_variables, batch):
    def loss_fn(params, teacher_variables):
      forward = methods.Forward(model, params, {}, jax.random.key(0))
      return method.loss(forward, batch, {"teacher": teacher_variables}).loss
    return jax.value_and_grad(loss_fn, argnums=(0, 1))(variables["params"], teacher_variables)

  loss, (_, teacher_grad) = loss_and_grad(student, teacher, batch)
  z, *_ = numpy_forward(student["params"], batch["image"])
  t, *_ = numpy_forward(teacher["params"], batch["image"])
  expected = (ce(z, batch["label"]).mean() + 0.7 * 4.0 * kl(
      special.softmax(t / 2.0, axis=-1), log_softmax(z / 2.0)).mean())
  np.testing.assert_allclose(float(loss), expected, rtol=2e-5)
  assert all(np.all(g == 0) for g in jax.tree.leaves(teacher_grad))  # frozen
  with pytest.raises(ValueError, match=r"config\.teacher\.workdir"):
    methods.BAN().init_state(C)
