"""Trace-time checks name the argument; check_labels works under checkify."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

from zipfls_jax import validation


def test_check_logits_labels_returns_num_classes_and_names_arguments():
  assert validation.check_logits_labels(np.zeros((3, 4), np.float32), np.zeros(3, np.int32)) == 4
  with pytest.raises(ValueError, match=r"`labels` must have shape \(3,\).*got \(4,\)"):
    validation.check_logits_labels(np.zeros((3, 4), np.float32), np.zeros(4, np.int32))
  with pytest.raises(TypeError, match="`logits` must be a floating-point array, got dtype int32"):
    validation.check_logits_labels(np.zeros((3, 4), np.int32), np.zeros(3, np.int32))
  assert validation.check_logits_labels(np.zeros((3, 4), np.int32), np.zeros(3, np.int32),
                                        "scores", allow_int=True) == 4


def test_check_where_and_positive():
  with pytest.raises(TypeError, match="`where` must be boolean"):
    validation.check_where(np.ones(3, np.int32), (3,))
  validation.check_where(None, (3,))
  with pytest.raises(ValueError, match="`power` must be > 0, got -1"):
    validation.check_positive("power", -1)
  with pytest.raises(TypeError, match="`power` must be a Python number"):
    validation.check_positive("power", np.ones(2))


def test_check_labels_under_checkify():
  fn = jax.jit(checkify.checkify(lambda y: validation.check_labels(y, 3)))
  assert fn(jnp.array([0, 2]))[0].get() is None
  assert "labels must lie in [0, 3)" in fn(jnp.array([0, -1]))[0].get()
