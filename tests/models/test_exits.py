"""BYOT's bottleneck exits (`exit_type='bottleneck'`) on the CIFAR and ImageNet ResNets.

Parameter counts are computed here from the layer shapes of BYOT's
separable-convolution block, the exits' forward pass is recomputed in NumPy
from that block's definition (tests/models/numpy_reference.py), and a model
with exits must be the model without them plus modules that nothing else
reads: same parameters, same initial values, same outputs.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import numpy_reference as ref
from zipfls_jax.models import get_model, without_exits
from zipfls_jax.models import resnet

NUM_CLASSES = 10
BATCH = 4
# name -> (image side, output width of each stage). Stage 1's map is 32x32
# (CIFAR) or 16x16 (ImageNet-style), the final one 4x4 or 2x2.
TINY = {
    "cifar_resnet_tiny": (32, (8, 16, 32, 64)),
    "resnet_tiny": (64, (8, 16, 32, 64)),
    "resnext_tiny": (64, (32, 64, 128, 256)),   # Bottleneck blocks: 4x base width
}


def sep_conv_params(c_in, c_out):
  """BYOT's SepConv: depthwise 3x3, pointwise c_in -> c_in, BN, depthwise 3x3,
  pointwise c_in -> c_out, BN; no conv biases; a BN has a scale and a bias."""
  return (9 * c_in + c_in * c_in + 2 * c_in) + (9 * c_in + c_in * c_out + 2 * c_out)


def exit_params(widths, num_classes):
  """Exits after every stage s but the last: blocks widths[s] -> widths[s+1] ->
  ... -> widths[-1], then Linear(widths[-1], C) with a bias."""
  total = 0
  for s in range(len(widths) - 1):
    total += sum(sep_conv_params(a, b) for a, b in zip(widths[s:-1], widths[s + 1:]))
    total += widths[-1] * num_classes + num_classes
  return total


def exit_batch_stats(widths):
  """Running mean and variance of the two BNs (c_in and c_out wide) of each block."""
  return sum(2 * (a + b) for s in range(len(widths) - 1)
             for a, b in zip(widths[s:-1], widths[s + 1:]))


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def abstract_variables(model, side):
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                        jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32))


# name, C, widths, parameters without exits (published; ResNet50 at C=200 is
# its C=1000 count less 800 classes of Linear(2048)), with bottleneck exits.
FULL_SIZE = [
    ("cifar_resnet18", 100, (64, 128, 256, 512), 11_217_444, 12_097_872),
    ("resnet18", 1000, (64, 128, 256, 512), 11_689_512, 13_955_040),
    ("resnet50", 200, (256, 512, 1024, 2048), 25_557_032 - 800 * 2049, 36_458_336),
]


@pytest.mark.parametrize("name, num_classes, widths, plain, with_exits", FULL_SIZE,
                         ids=[c[0] for c in FULL_SIZE])
def test_full_size_parameter_counts_with_bottleneck_exits(name, num_classes, widths, plain,
                                                          with_exits):
  assert plain + exit_params(widths, num_classes) == with_exits
  model = get_model(name, num_classes=num_classes, exits=True, exit_type="bottleneck")
  assert count(abstract_variables(model, 32)["params"]) == with_exits


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_exits_add_exactly_the_bottleneck_and_head_parameters(name):
  side, widths = TINY[name]
  plain = abstract_variables(get_model(name, num_classes=NUM_CLASSES), side)
  model = get_model(name, num_classes=NUM_CLASSES, exits=True, exit_type="bottleneck")
  variables = abstract_variables(model, side)
  assert count(variables["params"]) - count(plain["params"]) == exit_params(widths, NUM_CLASSES)
  assert (count(variables["batch_stats"]) - count(plain["batch_stats"])
          == exit_batch_stats(widths))
  params = variables["params"]
  assert sorted(k for k in params if k.startswith("exit")) == [
      "exit1_bottleneck", "exit1_head", "exit2_bottleneck", "exit2_head", "exit3_bottleneck",
      "exit3_head"]
  # Exit k (stage k - 1) has 4 - k blocks; the first reads the stage's width.
  for k in (1, 2, 3):
    blocks = params[f"exit{k}_bottleneck"]
    assert sorted(blocks) == [f"block{b + 1}" for b in range(4 - k)]
    c_in, c_out = widths[k - 1], widths[k]
    assert blocks["block1"]["depthwise1"]["kernel"].shape == (3, 3, 1, c_in)
    assert blocks["block1"]["pointwise2"]["kernel"].shape == (1, 1, c_in, c_out)
    assert params[f"exit{k}_head"]["kernel"].shape == (widths[-1], NUM_CLASSES)


def test_exit_stages_choose_a_subset():
  model = get_model("cifar_resnet_tiny", num_classes=NUM_CLASSES, exits=True,
                    exit_type="bottleneck", exit_stages=(1,))
  params = abstract_variables(model, 32)["params"]
  assert sorted(k for k in params if k.startswith("exit")) == ["exit1_bottleneck", "exit1_head"]
  assert sorted(params["exit1_bottleneck"]) == ["block1", "block2"]
  assert params["exit1_bottleneck"]["block1"]["depthwise1"]["kernel"].shape == (3, 3, 1, 16)


def capture_stage_outputs(module, method_name):
  # With one block per stage (the tiny models), a stage's output is its block's.
  return method_name == "__call__" and module.name is not None and module.name.startswith("stage")


@pytest.fixture(scope="module", params=["cifar_resnet_tiny", "resnet_tiny"])
def run(request):
  """A tiny model with bottleneck exits: init, one train-mode apply, the plain model's too."""
  name = request.param
  side, widths = TINY[name]
  model = get_model(name, num_classes=NUM_CLASSES, exits=True, exit_type="bottleneck")
  plain = get_model(name, num_classes=NUM_CLASSES)
  images = jax.random.normal(jax.random.key(0), (BATCH, side, side, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(images)
  plain_variables = jax.jit(lambda x: plain.init(jax.random.key(1), x, train=False))(images)
  train_apply = jax.jit(lambda v, x: model.apply(
      v, x, train=True, votes=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=capture_stage_outputs))
  out, state = train_apply(variables, images)
  return dict(name=name, widths=widths, model=model, plain=plain, images=images,
              variables=variables, plain_variables=plain_variables, out=out, state=state)


def test_output_shapes(run):
  out = run["out"]
  d = run["widths"][-1]
  assert out.logits.shape == (BATCH, NUM_CLASSES) and out.features.shape == (BATCH, d)
  assert [e.shape for e in out.exit_logits] == [(BATCH, NUM_CLASSES)] * 3
  assert [e.shape for e in out.exit_features] == [(BATCH, d)] * 3
  assert all(e.dtype == jnp.float32 for e in out.exit_logits + out.exit_features)
  # The bottlenecks end on the final map's shape; exits never vote.
  maps = run["state"]["intermediates"]
  final_shape = maps["head"]["feature_map"][0].shape
  for k in (1, 2, 3):
    assert maps[f"exit{k}_head"]["feature_map"][0].shape == final_shape
  side = final_shape[1]
  assert out.votes.shape == (BATCH, side * side)


def test_bf16_exits_return_float32():
  model = get_model("cifar_resnet_tiny", num_classes=NUM_CLASSES, exits=True,
                    exit_type="bottleneck", dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda x: model.apply(
      model.init(jax.random.key(0), x, train=False), x, train=False), images)
  assert [e.dtype for e in out.exit_logits + out.exit_features] == [jnp.float32] * 6


def torch_layout(block):
  """Our SeparableConvBlock's parameters and statistics under BYOT's SepConv names."""
  conv = lambda kernel: np.transpose(np.asarray(kernel), (3, 2, 0, 1))   # HWIO -> OIHW
  p = {}
  for ours, torch in (("depthwise1", "op.0"), ("pointwise1", "op.1"), ("depthwise2", "op.4"),
                      ("pointwise2", "op.5")):
    p[f"{torch}.weight"] = conv(block[ours]["kernel"])
  for ours, torch in (("bn1", "op.2"), ("bn2", "op.6")):
    p[f"{torch}.weight"] = np.asarray(block[ours]["scale"])
    p[f"{torch}.bias"] = np.asarray(block[ours]["bias"])
  return p


def test_exits_compute_byot_sep_convs_then_pool_and_classify(run):
  """Exit k: BYOT's SepConv chain on stage k's output (train mode), global pool, linear."""
  params = run["variables"]["params"]
  maps = run["state"]["intermediates"]
  out = run["out"]
  for k in (1, 2, 3):
    x = np.asarray(maps[f"stage{k}_block1"]["__call__"][0]).transpose(0, 3, 1, 2)
    bottleneck = params[f"exit{k}_bottleneck"]
    for b in range(4 - k):
      x = ref.byot_sep_conv(x, torch_layout(bottleneck[f"block{b + 1}"]))
    features = x.mean(axis=(2, 3))
    head = params[f"exit{k}_head"]
    logits = features @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
    np.testing.assert_allclose(out.exit_features[k - 1], features, rtol=1e-4,
                               atol=1e-4 * np.abs(features).max())
    np.testing.assert_allclose(out.exit_logits[k - 1], logits, rtol=1e-4,
                               atol=1e-4 * np.abs(logits).max())


def test_the_model_without_exits_is_unchanged(run):
  """Exits only add modules: the rest, initial values included, is the plain model."""
  variables, plain_variables = run["variables"], run["plain_variables"]
  shared = without_exits(variables)
  assert jax.tree.structure(shared) == jax.tree.structure(plain_variables)
  jax.tree.map(np.testing.assert_array_equal, shared, plain_variables)
  assert set(variables["params"]) - set(shared["params"]) == {
      f"exit{k}_{part}" for k in (1, 2, 3) for part in ("bottleneck", "head")}

  # The exit model's shared parameters give the plain model the same outputs
  # and the same batch-statistics updates.
  plain = run["plain"]
  out, state = jax.jit(lambda v, x: plain.apply(v, x, train=True, votes=True,
                                                mutable=["batch_stats"]))(shared, run["images"])
  np.testing.assert_allclose(out.logits, run["out"].logits, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out.features, run["out"].features, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(out.votes, run["out"].votes)
  assert out.exit_logits == () and out.exit_features == ()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6),
               state["batch_stats"], without_exits(run["state"])["batch_stats"])


def test_gradients_reach_each_exit_and_only_the_stages_before_it(run):
  model, variables, images = run["model"], run["variables"], run["images"]
  weights = jax.random.normal(jax.random.key(2), (BATCH, NUM_CLASSES))

  @jax.jit
  def grads(params, batch_stats, images, weights):
    def losses(params):
      out, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                           mutable=["batch_stats"])
      # One term per exit (logits and features), and the final head.
      return [jnp.sum(z * weights) + jnp.sum(g ** 2)
              for z, g in zip(out.exit_logits, out.exit_features)] + [jnp.sum(out.logits * weights)]
    return jax.jacrev(lambda p: jnp.stack(losses(p)))(params)

  g = grads(variables["params"], variables["batch_stats"], images, weights)

  def reached(term, module):
    return any(bool(np.any(leaf[term] != 0)) for leaf in jax.tree.leaves(g[module]))

  for term in range(3):   # exit k = term + 1 reads stage k
    k = term + 1
    for part in ("bottleneck", "head"):
      # Every leaf of the exit's own modules learns.
      assert all(bool(np.any(leaf[term] != 0)) for leaf in jax.tree.leaves(g[f"exit{k}_{part}"]))
    for other in {1, 2, 3} - {k}:
      assert not reached(term, f"exit{other}_bottleneck") and not reached(term, f"exit{other}_head")
    assert all(reached(term, f"stage{s}_block1") for s in range(1, k + 1))
    assert not any(reached(term, f"stage{s}_block1") for s in range(k + 1, 5))
    assert not reached(term, "head") and reached(term, "conv1")
  # The final logits train no exit.
  assert not any(reached(3, m) for m in g if m.startswith("exit"))
  assert reached(3, "head") and reached(3, "stage4_block1")


def test_linear_exits_have_no_exit_features():
  model = get_model("cifar_resnet_tiny", num_classes=NUM_CLASSES, exits=True)
  images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda x: model.apply(
      model.init(jax.random.key(0), x, train=False), x, train=False), images)
  assert len(out.exit_logits) == 2 and out.exit_features == ()


@pytest.mark.parametrize("name, kwargs, match", [
    ("resnet50", dict(exits=True), r"exit_type='linear'.*no linear exits.*'bottleneck' only"),
    ("resnet_tiny", dict(exits=True, exit_type="linear"), r"exit_type='linear'"),
    ("cifar_densenet121", dict(exits=True, exit_type="bottleneck"),
     r"no bottleneck exits.*exist for cifar_resnet18.*resnet50"),
    ("densenet121", dict(exits=True, exit_type="bottleneck"), r"no bottleneck exits"),
    ("mobilenet_v2_tiny", dict(exits=True, exit_type="bottleneck"), r"no bottleneck exits"),
    ("cifar_resnet18", dict(exits=True, exit_type="byot"), r"`exit_type` must be one of"),
    ("cifar_resnet18", dict(exit_type="byot"), r"`exit_type` must be one of"),
    ("cifar_resnet18", dict(exits=True, exit_type="bottleneck", vote_exits=True),
     r"`vote_exits=True` needs exit_type='linear'"),
    ("resnet18", dict(exits=True, exit_type="bottleneck", vote_exits=True),
     r"`vote_exits=True` needs exit_type='linear'"),
])
def test_bad_exit_options_raise(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    get_model(name, num_classes=10, **kwargs)


def test_exit_type_is_ignored_without_exits():
  # One config can carry exit_type='bottleneck' for every model.
  for name in ("densenet121", "cifar_densenet_tiny", "resnet18"):
    model = get_model(name, num_classes=10, exit_type="bottleneck")
    assert not getattr(model, "exits", False)


@pytest.mark.parametrize("model, match", [
    (get_model("cifar_resnet_tiny", num_classes=10, exits=True, exit_type="bottleneck",
               exit_stages=(3,)), r"`exit_stages` must name stages 0\.\.2 for bottleneck"),
    (get_model("resnet_tiny", num_classes=10, exits=True, exit_type="bottleneck",
               exit_stages=(0, -1)), r"`exit_stages` must name stages 0\.\.2"),
    (resnet.ResNetTiny(num_classes=10, exits=True, exit_type="linear"),
     r"exit_type='linear'.*only"),
    (resnet.ResNetTiny(num_classes=10, exits=True, exit_type="both"), r"`exit_type` must be"),
])
def test_bad_exit_fields_raise_at_trace_time(model, match):
  with pytest.raises(ValueError, match=match):
    abstract_variables(model, 32)


def test_the_class_builds_bottleneck_exits_by_default():
  # A ResNet has only BYOT's exits, so exits=True alone means them.
  out = jax.eval_shape(
      lambda x: resnet.ResNetTiny(num_classes=10, exits=True).init_with_output(
          jax.random.key(0), x, train=False)[0],
      jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  assert len(out.exit_features) == 3

