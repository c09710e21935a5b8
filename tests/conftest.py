"""Test-wide JAX setup: 8 fake CPU devices and a cheap compiler.

Must run before any JAX computation, which is why it lives in conftest.
"""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# Compile time dominates these tiny tests; numerics are unaffected.
jax.config.update("jax_disable_most_optimizations", True)
# A program compiled again in the same session (the train step of each run
# of the loop tests, of a resumed run, of each test of one model) is loaded
# from JAX's compilation cache instead of compiled anew. A fresh folder per
# process, so every session still compiles each program once.
_CACHE_DIR = tempfile.mkdtemp(prefix="zipfls_jax_test_cache_")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
