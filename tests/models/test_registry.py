"""Parameter counts and output shapes of every registered model (SPEC 5).

Only shapes are computed (`jax.eval_shape`), so the full-size models cost a
trace each, nothing more. Expected counts are the published PyTorch ones.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax.models import MODEL_NAMES, get_model

# (name, num_classes, exits) -> parameters, PyTorch-style (BN scale + bias; no
# running statistics), from SPEC section 5 / torchvision.
EXPECTED_PARAMS = {
    ("cifar_resnet18", 100, False): 11_217_444,
    ("cifar_resnet18", 100, True): 11_256_044,
    ("cifar_densenet121", 100, False): 7_048_548,
    ("cifar_densenet121", 100, True): 7_127_084,
    ("resnet18", 1000, False): 11_689_512,
    ("resnet50", 1000, False): 25_557_032,
    ("resnet101", 1000, False): 44_549_160,
    ("resnext50_32x4d", 1000, False): 25_028_904,
    ("resnext101_32x8d", 1000, False): 88_791_336,
    ("densenet121", 1000, False): 7_978_856,
    ("mobilenet_v2", 1000, False): 3_504_872,
}

# name -> (input size, final map side, pooled feature width D).
SHAPES = {
    "cifar_resnet18": (32, 4, 512),
    "cifar_resnet34": (32, 4, 512),
    "cifar_densenet121": (32, 4, 1024),
    "resnet18": (224, 7, 512),
    "resnet34": (224, 7, 512),
    "resnet50": (224, 7, 2048),
    "resnet101": (224, 7, 2048),
    "resnext50_32x4d": (224, 7, 2048),
    "resnext101_32x8d": (224, 7, 2048),
    "densenet121": (224, 7, 1024),
    "mobilenet_v2": (224, 7, 1280),
}
# Exit maps (side, for each exit) at 32x32: ResNet stages 2 and 3 (16, 8);
# DenseNet after transitions 2 and 3 (8, 4).
EXIT_SIDES = {"cifar_resnet18": (16, 8), "cifar_resnet34": (16, 8), "cifar_densenet121": (8, 4)}


@functools.lru_cache(maxsize=None)
def shapes_of(name, num_classes, exits, batch=2):
  """Shapes of the variables and of a train-mode output with votes, x2 resize."""
  size = SHAPES[name][0]
  model = get_model(name, num_classes=num_classes, exits=exits, vote_exits=exits, vote_upsample=2)
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)

  def init_and_apply(images):
    variables = model.init(jax.random.key(0), images, train=False)
    out, _ = model.apply(variables, images, train=True, votes=True, mutable=["batch_stats"],
                         rngs={"dropout": jax.random.key(1)})
    return variables, out

  return jax.eval_shape(init_and_apply, images)


def count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("key", sorted(EXPECTED_PARAMS), ids=lambda k: f"{k[0]}-C{k[1]}-exits{k[2]}")
def test_parameter_count_matches_reference(key):
  variables, _ = shapes_of(*key)
  assert count(variables["params"]) == EXPECTED_PARAMS[key]
  assert set(variables) == {"params", "batch_stats"}
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_shapes(name):
  _, side, depth = SHAPES[name]
  _, out = shapes_of(name, 10, False)
  assert out.logits.shape == (2, 10) and out.logits.dtype == jnp.float32
  assert out.features.shape == (2, depth)
  # One vote per position of the x2-resized final map.
  assert out.votes.shape == (2, (2 * side) ** 2) and out.votes.dtype == jnp.int32
  assert out.exit_logits == ()


@pytest.mark.parametrize("name", sorted(EXIT_SIDES))
def test_exit_output_shapes(name):
  _, side, _ = SHAPES[name]
  _, out = shapes_of(name, 10, True)
  assert [e.shape for e in out.exit_logits] == [(2, 10), (2, 10)]
  expected_k = sum((2 * s) ** 2 for s in (side, *EXIT_SIDES[name]))
  assert out.votes.shape == (2, expected_k)


def test_every_registered_name_builds_and_the_paper_names_exist():
  paper = {"cifar_resnet18", "cifar_resnet34", "cifar_densenet121", "resnet18", "resnet50",
           "resnet101", "resnext50_32x4d", "resnext101_32x8d", "densenet121", "mobilenet_v2",
           "cifar_resnet_tiny", "resnet_tiny", "densenet_tiny"}
  assert paper <= set(MODEL_NAMES)
  for name in MODEL_NAMES:
    assert get_model(name, num_classes=3).num_classes == 3


@pytest.mark.parametrize("name, kwargs, error, match", [
    ("resnet_50", {}, ValueError, "Unknown model name"),
    ("resnet18", dict(num_classes=1), ValueError, "num_classes"),
    ("resnet18", dict(num_classes=10.0), ValueError, "num_classes"),
    ("resnet50", dict(exits=True), ValueError, "exits"),
    ("cifar_resnet18", dict(vote_exits=True), ValueError, "vote_exits"),
    ("cifar_resnet18", dict(vote_upsample=0), ValueError, "vote_upsample"),
    ("cifar_resnet18", dict(vote_upsample=2.0), ValueError, "vote_upsample"),
    ("densenet121", dict(zero_init_residual=True), ValueError, "zero_init_residual"),
    ("resnet18", dict(dropout_rate=0.1), TypeError, "dropout_rate"),
])
def test_bad_options_raise(name, kwargs, error, match):
  kwargs = {"num_classes": 10, **kwargs}
  with pytest.raises(error, match=match):
    get_model(name, **kwargs)


def test_neutral_options_are_accepted_by_every_model():
  for name in ("densenet121", "mobilenet_v2", "cifar_densenet121"):
    model = get_model(name, num_classes=10, exits=False, vote_exits=False, zero_init_residual=False)
    assert not hasattr(model, "zero_init_residual")


@pytest.mark.parametrize("images, error", [
    (jnp.zeros((2, 32, 32)), ValueError),
    (jnp.zeros((2, 32, 32, 3), jnp.int32), TypeError),
])
def test_bad_images_raise(images, error):
  model = get_model("cifar_resnet_tiny", num_classes=10)
  with pytest.raises(error, match="images"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)


@pytest.mark.parametrize("name, kwargs, match", [
    ("cifar_resnet_tiny", dict(exits=True, exit_stages=(1, 4)), "exit_stages"),
    ("cifar_densenet_tiny", dict(exits=True, exit_blocks=(3,)), "exit_blocks"),
    ("resnet_tiny", dict(groups=2), "groups=2"),
])
def test_bad_architecture_options_raise_at_trace_time(name, kwargs, match):
  model = get_model(name, num_classes=10, **kwargs)
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
