"""Every baseline trains through `train_and_evaluate` on mock data, and OLS resumes exactly.

The real loop: the method's data needs reach the input pipeline (class
pairs, two views), its model needs reach the model (BYOT's exits, dropped
at evaluation), its state is checkpointed. Tiny model, 8x8 images, three
steps each, half under the synchronised jit step and half under the
per-device (shard_map) step.
"""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments.configs import paper
from tests.training.test_loop import _train_records, mock
from zipfls_jax.training import checkpoint as checkpoint_lib
from zipfls_jax.training import loop, parallel

NUM_EXAMPLES = 24


def config_for(method, *, steps=3, batch_norm="sync", batch_size=16):
  config = paper.recipe("cifar100", "cifar_resnet_tiny", method)
  config.image_size = 8
  config.batch_size = batch_size
  config.eval_batch_size = 16
  config.num_train_steps = steps
  config.steps_per_epoch = 3
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.tensorboard = False
  config.console = False
  config.batch_norm = batch_norm
  return config


# The methods whose data or model needs change what the loop does (TF-KD's
# wiring is CE's; OLS and PS-KD train in the resume test below).
@pytest.mark.parametrize("method, batch_norm, extra", [
    ("cs_kd", "per_device", "train_cs_kd"),
    ("bake", "sync", "train_bake"),
    ("ddgsd", "per_device", "train_ce_view2"),
    ("byot", "sync", "train_byot_features"),
])
def test_each_method_trains_and_evaluates_on_mock_data(tmp_path, method, batch_norm, extra):
  # 32 images: each of the 8 devices gets whole groups (BAKE's are of 4 on
  # CIFAR-100) and, for CS-KD, two anchors for its BatchNorm statistics.
  config = config_for(method, batch_norm=batch_norm, batch_size=32)
  if method == "byot":
    config.model_options.exit_stages = (2,)   # one exit: the wiring, at a third of the compile
  with mock(NUM_EXAMPLES):
    summary = loop.train_and_evaluate(config, str(tmp_path))
  assert summary["step"] == 3 and not summary["preempted"]
  records = _train_records(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3]
  for r in records:
    assert np.isfinite(r["train_loss"]) and np.isfinite(r[extra])
  assert 0.0 <= summary["final_top1"] <= 100.0


def _state_at(workdir, step, config):
  setup = loop.build_setup(config, num_train_examples=NUM_EXAMPLES)
  checkpoints = checkpoint_lib.Checkpoints(os.path.join(workdir, "checkpoints"), every_steps=2)
  abstract = checkpoint_lib.abstract_state(setup.init_state, jax.random.key(0),
                                           parallel.replicated(parallel.make_data_mesh()))
  restored = checkpoints.restore(abstract)
  checkpoints.close()
  assert restored[0] == step
  state = restored[1]
  return jax.device_get(state.replace(rng=jax.random.key_data(state.rng)))


@pytest.mark.parametrize("method, batch_norm", [("ols", "per_device"), ("ps_kd", "sync")])
def test_a_stateful_method_resumes_mid_epoch_to_the_uninterrupted_state(tmp_path, method,
                                                                         batch_norm):
  # Epochs of 3 steps; checkpoints at 2, 4, 5. Resuming from step 2 (OLS's
  # accumulator holds two steps of the first epoch; PS-KD's store the
  # predictions of those steps) must end where the uninterrupted run ends,
  # the method's state included.
  config = config_for(method, steps=5, batch_norm=batch_norm)
  config.dataset = "fashion_mnist"   # 10 classes: OLS counts some correct examples
  config.max_checkpoints_to_keep = 3
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  with mock(NUM_EXAMPLES):
    loop.train_and_evaluate(config, str(straight))
  straight_state = _state_at(straight, 5, config)
  final = straight_state.method_state
  if method == "ols":
    assert final.counts.sum() > 0 and final.matrix.sum() > 0   # a real matrix, counts going
  else:
    assert int(final["epoch"]) == 1 and np.asarray(final["store"]).any(axis=1).sum() > 0
  shutil.copytree(straight, resumed)
  for step in ("4", "5"):
    shutil.rmtree(resumed / "checkpoints" / step)
  with mock(NUM_EXAMPLES):
    loop.train_and_evaluate(config, str(resumed))
  jax.tree.map(np.testing.assert_array_equal, straight_state, _state_at(resumed, 5, config))
  records = _train_records(resumed)
  assert records == _train_records(straight) and len(records) == 5
  assert all(np.isfinite(r["train_loss"]) for r in records)


def test_ban_trains_from_its_frozen_teacher(tmp_path):
  # Born again: the teacher is a CE run of the student's own network.
  teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
  teacher_config = config_for("ce", steps=2)
  student_config = config_for("ban", steps=2)
  student_config.teacher.workdir = str(teacher_dir)
  with pytest.raises(FileNotFoundError, match=r"config\.teacher\.workdir: .* holds no run"):
    loop.build_setup(student_config, num_train_examples=NUM_EXAMPLES)
  assert not os.path.exists(student_dir)
  with mock(NUM_EXAMPLES):
    loop.train_and_evaluate(teacher_config, str(teacher_dir))
    summary = loop.train_and_evaluate(student_config, str(student_dir))
  assert summary["step"] == 2
  for r in _train_records(student_dir):
    assert np.isfinite(r["train_ban"]) and r["train_ban"] > 0
  # The teacher the student kept is the teacher's last checkpoint, bit for bit.
  teacher_state = _state_at(teacher_dir, 2, teacher_config)
  kept = _state_at(student_dir, 2, student_config).method_state["teacher"]
  jax.tree.map(np.testing.assert_array_equal, kept["params"], teacher_state.params)
  jax.tree.map(np.testing.assert_array_equal, kept["batch_stats"], teacher_state.batch_stats)
  # A teacher of another dataset is refused, naming both.
  other = checkpoint_lib.read_workdir_config(str(teacher_dir)) | {"dataset": "fashion_mnist"}
  (teacher_dir / "config.json").write_text(json.dumps(other))
  with pytest.raises(ValueError, match=r"trained on 'fashion_mnist', this run trains on "
                                       r"'cifar100'"):
    loop.build_setup(student_config, num_train_examples=NUM_EXAMPLES)


def test_a_teacher_of_another_architecture_is_built_from_its_own_config(tmp_path):
  # What the student builds from the teacher's workdir (no arrays): the
  # teacher's own model, here a DenseNet for a ResNet student.
  teacher_config = config_for("ce")
  teacher_config.model = "cifar_densenet_tiny"
  (tmp_path / "checkpoints" / "3").mkdir(parents=True)
  (tmp_path / "config.json").write_text(json.dumps(teacher_config.to_dict()))
  student_config = config_for("ban")
  student_config.teacher.workdir = str(tmp_path)
  setup = loop.build_setup(student_config, num_train_examples=NUM_EXAMPLES)
  assert type(setup.teacher.model).__name__ == "DenseNet"
  assert setup.method.teacher is setup.teacher.eval_model
  assert "block1_layer1" in setup.method.teacher_variables["params"]   # DenseNet's modules
