"""`config.init_from`: a run starts from PyTorch weights in a safetensors file.

The file is written from a state dict of the authors' PyTorch names and
shapes (tests/models/torch_state_dicts.py), with 10 classes; a 100-class
run keeps its freshly initialised heads and says so, a 10-class one takes
everything from the file.
"""
import functools

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from safetensors.numpy import save_file

from experiments.configs import paper
from tests.models import torch_state_dicts as tables
from zipfls_jax.models import get_model
from zipfls_jax.training import (create_optimizer, create_train_state, init_from_pytorch,
                                 make_data_mesh, replicated)
from zipfls_jax.training import loop


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  shapes = tables.authors_cifar_resnet([1, 1, 1, 1], num_classes=10, widths=(8, 16, 32, 64))
  rng = np.random.default_rng(0)
  state_dict = {k: (rng.uniform(0.5, 2.0, s) if k.endswith("running_var") else rng.normal(size=s))
                .astype(np.float32) for k, s in shapes.items()
                if not k.endswith("num_batches_tracked")}
  path = tmp_path_factory.mktemp("weights") / "cifar_resnet_tiny.safetensors"
  save_file(state_dict, str(path))
  return str(path), state_dict


@pytest.mark.parametrize("num_classes", [10, 100])
def test_init_from_pytorch_loads_the_backbone_and_matching_heads(weights_file, num_classes):
  path, state_dict = weights_file
  model = get_model("cifar_resnet_tiny", num_classes=num_classes, exits=True)
  tx = create_optimizer(0.1)
  mesh = make_data_mesh()
  init = functools.partial(create_train_state, model=model, tx=tx, image_shape=(16, 16, 3))
  fresh = jax.jit(init, out_shardings=replicated(mesh))(jax.random.key(0))
  state, kept = init_from_pytorch(fresh, model, tx, path, sharding=replicated(mesh))
  assert state.params["conv1"]["kernel"].sharding.is_fully_replicated
  np.testing.assert_array_equal(state.params["stage2_block1"]["shortcut"]["kernel"],
                                state_dict["layer2.0.shortcut.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(state.batch_stats["stage4_block1"]["bn2"]["var"],
                                state_dict["layer4.0.bn2.running_var"])
  if num_classes == 10:
    assert kept == ()
    np.testing.assert_array_equal(state.params["exit2_head"]["kernel"],
                                  state_dict["linear3.weight"].T)
  else:
    assert kept == ("exit1_head", "exit2_head", "head")
    for head in kept:
      np.testing.assert_array_equal(state.params[head]["kernel"], fresh.params[head]["kernel"])
  # The optimizer state belongs to the new parameters (same tree, zero momentum).
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(fresh.opt_state)
  assert int(state.step) == 0


def test_a_run_starts_from_the_file_and_says_what_it_reinitialised(weights_file, tmp_path, capsys):
  path, _ = weights_file
  config = paper.recipe("cifar100", "cifar_resnet_tiny", "ce")   # the cheapest step
  config.init_from = path
  config.image_size = 16
  config.batch_size = config.eval_batch_size = 16
  config.num_train_steps = config.steps_per_epoch = config.log_every_steps = 1
  config.tensorboard = False
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 1 and np.isfinite(summary["final_top1"])
  out = capsys.readouterr().out
  assert (f"Initialised from {path}; head kept their fresh initialisation (the file has no "
          "weights for them: heads of another class count than the dataset's 100") in out


def test_a_missing_file_stops_the_run_before_anything_compiles(tmp_path):
  config = paper.recipe("cifar100", "cifar_resnet_tiny", "zipf")
  config.init_from = str(tmp_path / "nothing.safetensors")
  config.batch_size = config.eval_batch_size = 16
  config.image_size = 16
  config.tensorboard = False
  with tfds.testing.mock_data(num_examples=16, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(FileNotFoundError, match="config.init_from: no weights file"):
      loop.train_and_evaluate(config, str(tmp_path / "run"))
