"""Which pip extra provides what, and a clear error when one is missing.

`import zipfls_jax` needs only the core requirements. The subpackages need
an extra of setup.py (`models`, `experiments`); without it, a bare
"No module named 'flax'" would not say what to install. Each subpackage
calls `require` before its first third-party import. This module must
import nothing beyond the standard library.
"""
from __future__ import annotations

import importlib.util
from typing import Sequence


def require(package: str, modules: Sequence[str], extra: str) -> None:
  """Raises ModuleNotFoundError naming `extra` if any of `modules` is missing.

  Args:
    package: what needs the modules, for the message (e.g. 'zipfls_jax.models').
    modules: top-level module names to look for (found, not imported).
    extra: the setup.py extra that installs all of them.
  """
  missing = [m for m in modules if importlib.util.find_spec(m) is None]
  if missing:
    raise ModuleNotFoundError(
        f"{package} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
        f"not installed. Install the '{extra}' extra: pip install 'zipfls_jax[{extra}]' "
        f"(from a clone: pip install -e '.[{extra}]').",
        name=missing[0])
