"""PyTorch state dicts into our models: every registered model, exits included.

The state dicts are built from tables of PyTorch names and shapes written
down from torchvision's and the authors' source (tests/models/
torch_state_dicts.py, whose parameter counts are checked against the
published ones), never from our parameters. Full-size models are converted
with one constant per tensor, which shows that every tensor lands in exactly
one leaf; the tiny ones get random values, specific leaves are checked
against their PyTorch tensors by hand, and the two CIFAR models (the
paper's) are run whole against a NumPy forward pass of the authors' model
read straight from the state dict.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.models import numpy_reference as ref
from tests.models import torch_state_dicts as tables
from zipfls_jax.models import (get_model, load_pytorch_weights, merge_pytorch_weights,
                               read_pytorch_weights)

TINY_MOBILENET = ((1, 16, 1, 1), (6, 24, 2, 2))

# name -> (table builder(num_classes), get_model options, published parameter
# count of the table at C=1000 (ImageNet) or C=100 (CIFAR, exits included)).
TABLES = {
    "cifar_resnet18": (lambda c: tables.authors_cifar_resnet([2, 2, 2, 2], num_classes=c),
                       dict(exits=True), 11_256_044),
    "cifar_resnet34": (lambda c: tables.authors_cifar_resnet([3, 4, 6, 3], num_classes=c),
                       dict(exits=True), None),
    "cifar_densenet121": (lambda c: tables.authors_cifar_densenet([6, 12, 24, 16], num_classes=c),
                          dict(exits=True), 7_127_084),
    "resnet18": (lambda c: tables.torchvision_resnet([2, 2, 2, 2], bottleneck=False, num_classes=c),
                 {}, 11_689_512),
    "resnet34": (lambda c: tables.torchvision_resnet([3, 4, 6, 3], bottleneck=False, num_classes=c),
                 {}, None),
    "resnet50": (lambda c: tables.torchvision_resnet([3, 4, 6, 3], bottleneck=True, num_classes=c),
                 {}, 25_557_032),
    "resnet101": (lambda c: tables.torchvision_resnet([3, 4, 23, 3], bottleneck=True,
                                                      num_classes=c), {}, 44_549_160),
    "resnext50_32x4d": (lambda c: tables.torchvision_resnet(
        [3, 4, 6, 3], bottleneck=True, num_classes=c, groups=32, width_per_group=4),
                        {}, 25_028_904),
    "resnext101_32x8d": (lambda c: tables.torchvision_resnet(
        [3, 4, 23, 3], bottleneck=True, num_classes=c, groups=32, width_per_group=8),
                         {}, 88_791_336),
    "densenet121": (lambda c: tables.torchvision_densenet([6, 12, 24, 16], num_classes=c),
                    {}, 7_978_856),
    "mobilenet_v2": (lambda c: tables.torchvision_mobilenet_v2(num_classes=c), {}, 3_504_872),
    # The tiny variants: the same layouts at small widths.
    "cifar_resnet_tiny": (lambda c: tables.authors_cifar_resnet(
        [1, 1, 1, 1], num_classes=c, widths=(8, 16, 32, 64)), dict(exits=True), None),
    "cifar_densenet_tiny": (lambda c: tables.authors_cifar_densenet(
        [2, 2, 2, 2], num_classes=c, growth_rate=8), dict(exits=True), None),
    "resnet_tiny": (lambda c: tables.torchvision_resnet(
        [1, 1, 1, 1], bottleneck=False, num_classes=c, base=8), {}, None),
    "resnext_tiny": (lambda c: tables.torchvision_resnet(
        [1, 1, 1, 1], bottleneck=True, num_classes=c, base=8, groups=4, width_per_group=32),
                     {}, None),
    "densenet_tiny": (lambda c: tables.torchvision_densenet(
        [1, 1, 1, 1], num_classes=c, growth_rate=8, num_init_features=16), {}, None),
    "mobilenet_v2_tiny": (lambda c: tables.torchvision_mobilenet_v2(
        num_classes=c, width_mult=0.25, setting=TINY_MOBILENET, last_channel=32), {}, None),
}
FULL_SIZE = [name for name in TABLES if not name.endswith("_tiny")]
TINY = [name for name in TABLES if name.endswith("_tiny")]


def test_the_tables_have_the_published_parameter_counts():
  for name, (table, _, published) in TABLES.items():
    if published is not None:
      classes = 100 if name.startswith("cifar") else 1000
      assert tables.parameter_count(table(classes)) == published, name


def constant_state_dict(shapes):
  """Tensor k filled with k + 1 (read-only broadcasts: no memory)."""
  return {key: np.broadcast_to(np.float32(k + 1), shape) if not key.endswith("num_batches_tracked")
          else np.asarray(7, np.int64) for k, (key, shape) in enumerate(shapes.items())}


def random_state_dict(shapes, seed=0):
  rng = np.random.default_rng(seed)
  sd = {}
  for key, shape in shapes.items():
    if key.endswith("num_batches_tracked"):
      sd[key] = np.asarray(12, np.int64)
    elif key.endswith("running_var"):
      sd[key] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    else:
      sd[key] = rng.normal(0.0, 0.5, shape).astype(np.float32)
  return sd


def abstract_variables(model):
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


@pytest.mark.parametrize("name", FULL_SIZE + TINY)
def test_every_tensor_lands_in_exactly_one_leaf(name):
  table, options, _ = TABLES[name]
  shapes = table(10)
  model = get_model(name, num_classes=10, **options)
  variables = load_pytorch_weights(model, constant_state_dict(shapes))
  if name in TINY:   # (a second abstract trace of a full-size model costs seconds)
    # The tree and shapes are those model.init gives.
    want = abstract_variables(model)
    assert jax.tree.structure(variables) == jax.tree.structure(
        {"params": want["params"], "batch_stats": want["batch_stats"]})
    for got, spec in zip(jax.tree.leaves(variables), jax.tree.leaves(want)):
      assert got.shape == spec.shape and got.dtype == np.float32
  # Each leaf is one whole tensor (one constant), and every tensor is used once.
  values = []
  for leaf in jax.tree.leaves(variables):
    assert leaf.min() == leaf.max()
    values.append(int(leaf.flat[0]))
  weights = [k + 1 for k, key in enumerate(shapes) if not key.endswith("num_batches_tracked")]
  assert sorted(values) == weights


# (name, our leaf path, PyTorch key, layout): specific leaves, by hand.
SPOT_CHECKS = [
    ("cifar_resnet_tiny", "params/conv1/kernel", "conv1.weight", "conv"),
    ("cifar_resnet_tiny", "params/stage2_block1/shortcut/kernel", "layer2.0.shortcut.0.weight",
     "conv"),
    ("cifar_resnet_tiny", "params/stage3_block1/bn2/scale", "layer3.0.bn2.weight", None),
    ("cifar_resnet_tiny", "batch_stats/stage1_block1/bn1/var", "layer1.0.bn1.running_var", None),
    ("cifar_resnet_tiny", "params/head/kernel", "linear.weight", "linear"),
    ("cifar_resnet_tiny", "params/exit1_head/kernel", "linear2.weight", "linear"),
    ("cifar_resnet_tiny", "params/exit2_head/bias", "linear3.bias", None),
    ("cifar_densenet_tiny", "params/block4_layer2/conv2/kernel", "dense4.1.conv2.weight", "conv"),
    ("cifar_densenet_tiny", "params/transition1/conv/kernel", "trans1.conv.weight", "conv"),
    ("cifar_densenet_tiny", "batch_stats/transition3/bn/mean", "trans3.bn.running_mean", None),
    ("cifar_densenet_tiny", "params/bn_final/bias", "bn.bias", None),
    ("cifar_densenet_tiny", "params/exit2_bn/scale", "bn3.weight", None),
    ("cifar_densenet_tiny", "params/exit1_head/kernel", "linear2.weight", "linear"),
    ("resnet_tiny", "params/bn1/bias", "bn1.bias", None),
    ("resnet_tiny", "params/stage2_block1/downsample_conv/kernel", "layer2.0.downsample.0.weight",
     "conv"),
    ("resnet_tiny", "batch_stats/stage2_block1/downsample_bn/var",
     "layer2.0.downsample.1.running_var", None),
    ("resnet_tiny", "params/head/kernel", "fc.weight", "linear"),
    ("resnext_tiny", "params/stage1_block1/conv2/kernel", "layer1.0.conv2.weight", "conv"),
    ("resnext_tiny", "params/stage4_block1/bn3/scale", "layer4.0.bn3.weight", None),
    ("densenet_tiny", "params/conv1/kernel", "features.conv0.weight", "conv"),
    ("densenet_tiny", "params/bn1/scale", "features.norm0.weight", None),
    ("densenet_tiny", "params/block2_layer1/bn2/bias", "features.denseblock2.denselayer1.norm2.bias",
     None),
    ("densenet_tiny", "params/transition2/conv/kernel", "features.transition2.conv.weight", "conv"),
    ("densenet_tiny", "batch_stats/bn_final/mean", "features.norm5.running_mean", None),
    ("densenet_tiny", "params/head/bias", "classifier.bias", None),
    ("mobilenet_v2_tiny", "params/stem_conv/kernel", "features.0.0.weight", "conv"),
    ("mobilenet_v2_tiny", "params/stage1_block1/depthwise_conv/kernel",
     "features.1.conv.0.0.weight", "conv"),
    ("mobilenet_v2_tiny", "params/stage1_block1/project_bn/scale", "features.1.conv.2.weight",
     None),
    ("mobilenet_v2_tiny", "params/stage2_block2/expand_conv/kernel", "features.3.conv.0.0.weight",
     "conv"),
    ("mobilenet_v2_tiny", "params/stage2_block2/depthwise_bn/bias", "features.3.conv.1.1.bias",
     None),
    ("mobilenet_v2_tiny", "batch_stats/stage2_block2/project_bn/mean",
     "features.3.conv.3.running_mean", None),
    ("mobilenet_v2_tiny", "params/last_conv/kernel", "features.4.0.weight", "conv"),
    ("mobilenet_v2_tiny", "params/head/kernel", "classifier.1.weight", "linear"),
]


@pytest.fixture(scope="module")
def tiny_converted():
  cache = {}

  def get(name):
    if name not in cache:
      table, options, _ = TABLES[name]
      sd = random_state_dict(table(10))
      cache[name] = sd, load_pytorch_weights(name, sd, num_classes=10, **options)
    return cache[name]

  return get


@pytest.mark.parametrize("name, path, key, layout", SPOT_CHECKS,
                         ids=[f"{c[0]}:{c[2]}" for c in SPOT_CHECKS])
def test_specific_leaves_hold_their_pytorch_tensors(tiny_converted, name, path, key, layout):
  sd, variables = tiny_converted(name)
  leaf = variables
  for part in path.split("/"):
    leaf = leaf[part]
  # PyTorch conv weights are (out, in/groups, kh, kw); Flax kernels (kh, kw, in/groups, out).
  want = {"conv": lambda w: w.transpose(2, 3, 1, 0), "linear": lambda w: w.T,
          None: lambda w: w}[layout](sd[key])
  np.testing.assert_array_equal(leaf, want)


# --- The authors' CIFAR models, whole, against NumPy from the state dict ---

def gap_linear(fmap, sd, name):
  return fmap.mean(axis=(2, 3)) @ sd[name + ".weight"].T.astype(np.float64) + sd[name + ".bias"]


def authors_cifar_resnet_forward(x, sd, num_blocks):
  """The authors' CIFAR_ResNet in eval mode: (logits, [exit logits, shallowest first])."""
  out = ref.relu(ref.batch_norm(ref.conv2d(x, sd["conv1.weight"]), sd, "bn1.", train=False)[0])
  maps = []
  for i, blocks in enumerate(num_blocks):
    for j in range(blocks):
      out = ref.preact_block(out, sd, f"layer{i + 1}.{j}.", stride=2 if i > 0 and j == 0 else 1,
                             train=False)
    maps.append(out)
  return gap_linear(out, sd, "linear"), [gap_linear(maps[1], sd, "linear2"),
                                         gap_linear(maps[2], sd, "linear3")]


def authors_cifar_densenet_forward(x, sd, nblocks):
  """The authors' CIFAR_DenseNet in eval mode: (logits, [exit logits, shallowest first])."""
  def bn_relu(y, name):
    return ref.relu(ref.batch_norm(y, sd, name + ".", train=False)[0])

  out = ref.conv2d(x, sd["conv1.weight"])
  maps = []
  for i, n in enumerate(nblocks):
    for j in range(n):
      out = ref.dense_layer(out, sd, f"dense{i + 1}.{j}.", train=False)
    if i < 3:
      out = ref.conv2d(bn_relu(out, f"trans{i + 1}.bn"), sd[f"trans{i + 1}.conv.weight"], padding=0)
      n_, c, h, w = out.shape
      out = out.reshape(n_, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))   # avg_pool2d(2)
      maps.append(out)
  return gap_linear(bn_relu(out, "bn"), sd, "linear"), [
      gap_linear(bn_relu(maps[1], "bn2"), sd, "linear2"),
      gap_linear(bn_relu(maps[2], "bn3"), sd, "linear3")]


@pytest.mark.parametrize("name, forward, blocks", [
    ("cifar_resnet_tiny", authors_cifar_resnet_forward, [1, 1, 1, 1]),
    ("cifar_densenet_tiny", authors_cifar_densenet_forward, [2, 2, 2, 2]),
])
def test_converted_cifar_models_compute_the_authors_function(tiny_converted, name, forward, blocks):
  sd, variables = tiny_converted(name)
  model = get_model(name, num_classes=10, exits=True)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(np.float32)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  logits, exit_logits = forward(x.transpose(0, 3, 1, 2), sd, blocks)
  scale = np.abs(logits).max()
  np.testing.assert_allclose(out.logits, logits, rtol=1e-4, atol=1e-4 * scale)
  for got, want in zip(out.exit_logits, exit_logits, strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


# --- Options, files and errors ----------------------------------------------

def test_a_model_without_exits_skips_the_authors_exit_heads(tiny_converted):
  sd, with_exits = tiny_converted("cifar_densenet_tiny")   # the table always has them
  variables = load_pytorch_weights("cifar_densenet_tiny", sd, num_classes=10)
  assert not any(k.startswith("exit") for k in variables["params"])
  np.testing.assert_array_equal(variables["params"]["head"]["kernel"],
                                with_exits["params"]["head"]["kernel"])


def test_torchvision_resnet_needs_no_exit_heads_but_accepts_the_authors():
  shapes = TABLES["resnet_tiny"][0](10)
  sd = random_state_dict(shapes)
  plain = load_pytorch_weights("resnet_tiny", sd, num_classes=10)
  sd["linear2.weight"], sd["linear2.bias"] = np.zeros((10, 16), np.float32), np.zeros(10, np.float32)
  with_extra = load_pytorch_weights("resnet_tiny", sd, num_classes=10)
  jax.tree.map(np.testing.assert_array_equal, plain, with_extra)


def test_data_parallel_prefix_and_old_densenet_names_are_read():
  shapes = TABLES["densenet_tiny"][0](10)
  sd = random_state_dict(shapes)
  want = load_pytorch_weights("densenet_tiny", sd, num_classes=10)
  # nn.DataParallel's 'module.' prefix, and torchvision's published DenseNet
  # files' 'norm.1' for 'norm1'.
  old = {("module." + k).replace("denselayer1.norm1.", "denselayer1.norm.1.")
         .replace("denselayer1.conv2.", "denselayer1.conv.2."): v for k, v in sd.items()}
  assert "module.features.denseblock1.denselayer1.norm.1.weight" in old
  got = load_pytorch_weights("densenet_tiny", old, num_classes=10)
  jax.tree.map(np.testing.assert_array_equal, want, got)


def test_unknown_missing_and_misshaped_keys_are_named_with_their_shapes():
  sd = random_state_dict(TABLES["resnet_tiny"][0](10))
  sd["extra.weight"] = np.zeros(3, np.float32)
  del sd["layer1.0.conv1.weight"]
  sd["fc.bias"] = np.zeros(11, np.float32)
  with pytest.raises(ValueError) as error:
    load_pytorch_weights("resnet_tiny", sd, num_classes=10)
  message = str(error.value)
  assert "unknown keys (1):\n    extra.weight" in message
  assert "missing keys, expected shape (1):\n    layer1.0.conv1.weight (8, 8, 3, 3)" in message
  assert "fc.bias: expected (10,), found (11,)" in message


def test_the_class_count_must_match_unless_merging(tiny_converted):
  sd, _ = tiny_converted("cifar_resnet_tiny")
  model = get_model("cifar_resnet_tiny", num_classes=7, exits=True)
  with pytest.raises(ValueError, match=r"linear\.weight: expected \(7, 64\), found \(10, 64\)"):
    load_pytorch_weights(model, sd)
  # Stand-in initial variables: -1 everywhere, of the shapes model.init gives.
  fresh = jax.tree.map(lambda s: np.full(s.shape, -1.0, np.float32), abstract_variables(model))
  merged, kept = merge_pytorch_weights(fresh, model, sd)
  assert kept == ("exit1_head", "exit2_head", "head")
  for head in kept:
    np.testing.assert_array_equal(merged["params"][head]["kernel"], fresh["params"][head]["kernel"])
  np.testing.assert_array_equal(merged["params"]["conv1"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))
  # Same class count: everything comes from the weights.
  model10 = get_model("cifar_resnet_tiny", num_classes=10, exits=True)
  merged, kept = merge_pytorch_weights(fresh, model10, sd)
  assert kept == ()
  np.testing.assert_array_equal(merged["params"]["head"]["kernel"], sd["linear.weight"].T)


def test_bottleneck_exits_are_refused_by_load_and_kept_by_merge():
  """BYOT's exits have no PyTorch counterpart: merging keeps them as initialised."""
  sd = random_state_dict(TABLES["resnet_tiny"][0](10))
  with pytest.raises(ValueError, match="bottleneck exits.*merge_pytorch_weights"):
    load_pytorch_weights("resnet_tiny", sd, num_classes=10, exits=True, exit_type="bottleneck")
  exit_modules = ("exit1_bottleneck", "exit1_head", "exit2_bottleneck", "exit2_head",
                  "exit3_bottleneck", "exit3_head")
  for num_classes, kept_heads in ((10, ()), (7, ("head",))):
    model = get_model("resnet_tiny", num_classes=num_classes, exits=True, exit_type="bottleneck")
    fresh = jax.tree.map(lambda s: np.full(s.shape, -1.0, np.float32), abstract_variables(model))
    merged, kept = merge_pytorch_weights(fresh, model, sd)
    assert kept == tuple(sorted(exit_modules + kept_heads))
    assert jax.tree.structure(merged) == jax.tree.structure(fresh)
    for module in kept:
      for collection in ("params", "batch_stats"):
        if module in fresh[collection]:
          jax.tree.map(np.testing.assert_array_equal, merged[collection][module],
                       fresh[collection][module])
    np.testing.assert_array_equal(merged["params"]["stage3_block1"]["conv1"]["kernel"],
                                  sd["layer3.0.conv1.weight"].transpose(2, 3, 1, 0))
    if not kept_heads:
      np.testing.assert_array_equal(merged["params"]["head"]["kernel"], sd["fc.weight"].T)


def test_safetensors_files_are_read(tmp_path):
  from safetensors.numpy import save_file
  sd = random_state_dict(TABLES["mobilenet_v2_tiny"][0](10))
  path = tmp_path / "weights.safetensors"
  save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
  from_file = load_pytorch_weights("mobilenet_v2_tiny", path, num_classes=10)
  jax.tree.map(np.testing.assert_array_equal, from_file,
               load_pytorch_weights("mobilenet_v2_tiny", sd, num_classes=10))


def test_pth_files_without_torch_raise_a_clear_error(tmp_path, monkeypatch):
  path = tmp_path / "weights.pth"
  path.write_bytes(b"not read")
  monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` fail
  with pytest.raises(ImportError, match="needs PyTorch, which is not installed"):
    read_pytorch_weights(path)


@pytest.mark.parametrize("weights, error, match", [
    ("weights.npz", ValueError, "Unknown weights file type"),
    ("missing.safetensors", FileNotFoundError, "No weights file"),
    (42, TypeError, "`weights` must be a state dict"),
])
def test_bad_weights_arguments_raise(tmp_path, weights, error, match):
  if isinstance(weights, str):
    if not weights.startswith("missing"):
      (tmp_path / weights).write_bytes(b"")
    weights = tmp_path / weights
  with pytest.raises(error, match=match):
    read_pytorch_weights(weights)


def test_a_model_name_needs_num_classes():
  with pytest.raises(ValueError, match="num_classes"):
    load_pytorch_weights("resnet_tiny", {})
