"""The runnable examples in the loss modules' docstrings run and print what they say."""
import doctest

import jax.numpy as jnp
import pytest

import zipfls_jax
from zipfls_jax import losses, ranks, targets, validation, votes, zipf_law


@pytest.mark.parametrize("module", [losses, ranks, targets, validation, votes, zipf_law])
def test_docstring_examples(module):
  globs = {"jnp": jnp, **{name: getattr(zipfls_jax, name) for name in zipfls_jax.__all__}}
  result = doctest.testmod(module, extraglobs=globs, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0
