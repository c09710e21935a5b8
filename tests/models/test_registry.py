"""Parameter counts and output shapes of every registered model (docs/method.md section 5).

Only shapes are computed (`jax.eval_shape`), so the full-size models cost a
trace each, nothing more. Expected counts are the published PyTorch ones.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zipfls_jax.models import MODEL_NAMES, get_model

# name -> (input size, final map side, pooled feature width D, C of the
# reference count, parameters without exits, with exits). Counts are
# PyTorch-style (BN scale + bias; no running statistics), from docs/method.md section 5
# / torchvision; None where there is no published count.
MODELS = {
    "cifar_resnet18": (32, 4, 512, 100, 11_217_444, 11_256_044),
    "cifar_resnet34": (32, 4, 512, 100, None, None),
    "cifar_densenet121": (32, 4, 1024, 100, 7_048_548, 7_127_084),
    "resnet18": (224, 7, 512, 1000, 11_689_512, None),
    "resnet34": (224, 7, 512, 1000, None, None),
    "resnet50": (224, 7, 2048, 1000, 25_557_032, None),
    "resnet101": (224, 7, 2048, 1000, 44_549_160, None),
    "resnext50_32x4d": (224, 7, 2048, 1000, 25_028_904, None),
    "resnext101_32x8d": (224, 7, 2048, 1000, 88_791_336, None),
    "densenet121": (224, 7, 1024, 1000, 7_978_856, None),
    "mobilenet_v2": (224, 7, 1280, 1000, 3_504_872, None),
}
# Exit maps (side, for each exit) at 32x32: ResNet stages 2 and 3 (16, 8);
# DenseNet after transitions 2 and 3 (8, 4).
EXIT_SIDES = {"cifar_resnet18": (16, 8), "cifar_resnet34": (16, 8), "cifar_densenet121": (8, 4)}
CASES = [(name, False) for name in MODELS] + [(name, True) for name in EXIT_SIDES]


def shapes_of(name, exits, batch=2):
  """Shapes of the variables and of a train-mode output with votes, x2 resize."""
  size, _, _, num_classes, _, _ = MODELS[name]
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


# One trace per case: a full-size model costs seconds to trace even abstractly.
@pytest.mark.parametrize("name, exits", CASES, ids=lambda v: str(v))
def test_parameter_count_and_output_shapes(name, exits):
  _, side, depth, num_classes, params, exit_params = MODELS[name]
  variables, out = shapes_of(name, exits)
  expected = exit_params if exits else params
  if expected is not None:
    assert count(variables["params"]) == expected
  assert set(variables) == {"params", "batch_stats"}
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert out.logits.shape == (2, num_classes) and out.logits.dtype == jnp.float32
  assert out.features.shape == (2, depth)
  # One vote per position of each x2-resized map, final head first.
  sides = (side, *EXIT_SIDES[name]) if exits else (side,)
  assert out.votes.shape == (2, sum((2 * s) ** 2 for s in sides))
  assert out.votes.dtype == jnp.int32
  assert [e.shape for e in out.exit_logits] == [(2, num_classes)] * (len(sides) - 1)


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
