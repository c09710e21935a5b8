"""Test-wide JAX setup: 8 fake CPU devices and a cheap compiler.

Must run before any JAX computation, which is why it lives in conftest.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
# Compile time dominates these tiny tests; numerics are unaffected.
jax.config.update("jax_disable_most_optimizations", True)
