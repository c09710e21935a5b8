"""XLA:CPU flags that speed up the train step on CPUs; set before JAX starts.

jaxlib 0.10 hands convolutions to YNNPACK by default. At this package's
shapes YNNPACK's kernel for the weight gradient (the convolution whose
window is the whole feature map) is several times slower than XLA's own
Eigen kernel, and it dominates a CPU train step (`benchmarks/step_speed.py`,
results in `benchmarks/RESULTS.md`). `configure()` hands convolutions back
to Eigen.

Only `xla_cpu_*` flags are set: XLA reads them when compiling for the CPU
and never for a GPU or TPU, so accelerator programs are unchanged. XLA
reads `XLA_FLAGS` once, when JAX's first backend starts, so `configure()`
must run before any JAX computation: the experiment entry points
(`experiments/train.py`, `experiments/demo.py`) call it first thing.

A flag is only added if the installed jaxlib knows it (XLA aborts the
process on an unknown `XLA_FLAGS` entry), and never over a value the user
set for the same flag in `XLA_FLAGS`. Set `ZIPFLS_JAX_XLA_FLAGS=0` to add
none.
"""
from __future__ import annotations

import importlib.util
import mmap
import os
import sys
import warnings
from typing import List, MutableMapping, Optional

# Each flag with why; measured in benchmarks/RESULTS.md ("Train-step speed").
CPU_FLAGS = (
    # Convolutions (forward and both gradients) on Eigen, not YNNPACK: the
    # CIFAR ResNet18 step at batch 64 is several times faster.
    "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
)

DISABLE_ENV = "ZIPFLS_JAX_XLA_FLAGS"


def _flag_name(flag: str) -> str:
  return flag.lstrip("-").split("=", 1)[0]


def _jaxlib_library() -> Optional[str]:
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.origin:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "libjax_common.so")
  return path if os.path.exists(path) else None


def known_flags(names) -> set:
  """The subset of flag `names` that the installed jaxlib registers."""
  path = _jaxlib_library()
  if path is None:
    return set()
  with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as image:
    return {name for name in names if image.find(name.encode() + b"\0") >= 0}


def _known(flags) -> List[str]:
  """Those of `flags` (`--name=value`) that the installed jaxlib knows, in order."""
  known = known_flags({_flag_name(f) for f in flags})
  return [f for f in flags if _flag_name(f) in known]


def cpu_flags() -> List[str]:
  """The flags of `CPU_FLAGS` that the installed jaxlib knows."""
  return _known(CPU_FLAGS)


def configure(environ: Optional[MutableMapping[str, str]] = None) -> List[str]:
  """Adds the CPU train-step flags to `XLA_FLAGS`; returns the flags added.

  Call before JAX starts a backend (before the first computation or
  `jax.devices()`). Flags already in `XLA_FLAGS` keep the user's value.
  Nothing is added when `ZIPFLS_JAX_XLA_FLAGS=0`, and nothing (with a
  warning) when JAX has already started a backend, since XLA would ignore it.
  """
  environ = os.environ if environ is None else environ
  if environ.get(DISABLE_ENV, "1") == "0":
    return []
  if environ is os.environ and "jax" in sys.modules:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    if xla_bridge.backends_are_initialized():
      warnings.warn("zipfls_jax.xla_flags.configure() ran after JAX started a backend (its "
                    "first computation or jax.devices()); XLA reads XLA_FLAGS only then, so "
                    "no flags were added. Call it first thing.", RuntimeWarning, stacklevel=2)
      return []
  return add(CPU_FLAGS, environ)


def add(flags, environ: Optional[MutableMapping[str, str]] = None) -> List[str]:
  """Appends to `XLA_FLAGS` those `flags` the installed jaxlib knows; returns them.

  A flag whose name `XLA_FLAGS` already holds keeps that value. No checks
  beyond these (`configure()` adds its own): for callers that set flags of
  their own before JAX starts, as the test suite does.
  """
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  present = {_flag_name(f) for f in current.split()}
  added = [f for f in _known(flags) if _flag_name(f) not in present]
  if added:
    environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
  return added
