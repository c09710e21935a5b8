"""Test-wide JAX setup: 8 fake CPU devices and a cheap compiler.

Must run before any JAX computation, which is why it lives in conftest.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from zipfls_jax import xla_flags  # noqa: E402  (starts no JAX backend)

# XLA:CPU's older loop emitters compile these tests' small programs in
# 0.37-0.50x the time of its default fusion emitters (`python -m
# benchmarks.suite_compile_time`; the suite went from 352-418 s to
# 217-266 s, see benchmarks/RESULTS.md). Results agree to float rounding,
# and every test passes under both. In XLA_FLAGS, so that it reaches the
# processes tests start too (the xdist workers and the tests' own
# subprocesses inherit it).
# XLA aborts on a flag it does not know, and a newer jaxlib may drop this
# one: `add` sets it only if the installed jaxlib registers it, and never
# over a value already in XLA_FLAGS.
xla_flags.add(["--xla_cpu_use_fusion_emitters=false"])

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# Compile time dominates these tiny tests; numerics are unaffected.
jax.config.update("jax_disable_most_optimizations", True)
# A program compiled again in the same session (the train step of each run
# of the loop tests, of a resumed run, of each test of one model) is loaded
# from JAX's compilation cache instead of compiled anew. A fresh folder per
# session, so every session still compiles each program once.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _use_fresh_cache_dir():
  cache_dir = tempfile.mkdtemp(prefix="zipfls_jax_test_cache_")
  atexit.register(shutil.rmtree, cache_dir, ignore_errors=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)


if not os.environ.get("PYTEST_XDIST_WORKER"):
  _use_fresh_cache_dir()


def pytest_configure(config):
  # The workers of one `pytest -n N` run share one cache, in the run's base
  # temporary folder (the parent of each worker's, which pytest removes a
  # few runs later), so that a program two workers need (a module fixture
  # runs once per worker; tests of one model land on both) is compiled
  # once. JAX writes each entry once; an entry read while another worker
  # writes it fails to load and is compiled again, with a warning.
  if not os.environ.get("PYTEST_XDIST_WORKER"):
    return
  if not config.option.basetemp:
    _use_fresh_cache_dir()
    return
  run_temp = os.path.dirname(os.path.abspath(config.option.basetemp))
  cache_dir = os.path.join(run_temp, "jax_compilation_cache")
  os.makedirs(cache_dir, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)


def pytest_collection_modifyitems(items):
  # pytest-xdist hands out tests in this order: a long test started last
  # leaves the other worker idle until it ends (22 s of a 4-minute run).
  items.sort(key=lambda item: item.get_closest_marker("starts_first") is None)
