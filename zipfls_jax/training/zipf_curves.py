"""Every evaluation's Zipf's-law curve: fitted, logged and saved in the workdir.

The eval step sums each example's ranked softmax (`zipfls_jax.zipf_law`);
`record_evaluation` turns an evaluation's totals into the scalars the loop
logs (the power-law exponent and R^2 of the mean ranked curve, over all
classes and over the non-target classes) and saves the totals as
`<workdir>/zipf_law/step_<step>.npz`. `read_curves` loads them back.

One small file per evaluation (not one growing file) because object stores
such as gs:// cannot append, and because a resumed run that evaluates a step
again then simply replaces that step's file. Each file is written under a
temporary name and renamed, so a kill mid-write never leaves a truncated
curve. Only process 0 writes. This module must not run models or read data.
"""
from __future__ import annotations

import io
import re
from typing import Dict, Mapping

import jax
import numpy as np
from etils import epath

from zipfls_jax import zipf_law

CURVES_DIR = "zipf_law"
_FILE = re.compile(r"step_(\d+)\.npz")


def fit_scalars(ranked: zipf_law.RankedProbabilitySums, prefix: str = "eval_") -> Dict[str, float]:
  """Exponent and R^2 of the mean ranked curve, all classes and non-target only.

  Both fits use every rank (1..C and 1..C-1), as `zipf_law.fit_power_law`
  describes; the saved curves allow any other range afterwards.
  """
  out = {}
  for name, nontarget in (("zipf", False), ("zipf_nontarget", True)):
    fit = zipf_law.fit_power_law(ranked.mean(nontarget=nontarget))
    out[f"{prefix}{name}_exponent"] = float(fit.exponent)
    out[f"{prefix}{name}_r2"] = float(fit.r_squared)
  return out


def curve_path(workdir, step: int) -> epath.Path:
  return epath.Path(workdir) / CURVES_DIR / f"step_{int(step):09d}.npz"


def save_curve(workdir, step: int, ranked: zipf_law.RankedProbabilitySums) -> epath.Path:
  """Writes the totals (and, for convenience, the two mean curves) of one evaluation.

  The file holds 'probs' (2, C), 'nontarget' (2, C - 1) and 'count' (2,),
  the sums of `RankedProbabilitySums` (row 0 correctly classified, row 1
  not), and 'mean' (C,) and 'nontarget_mean' (C - 1,), the curves over all
  examples.
  """
  ranked = jax.device_get(ranked)
  path = curve_path(workdir, step)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  np.savez(buffer, probs=ranked.probs, nontarget=ranked.nontarget, count=ranked.count,
           mean=np.asarray(ranked.mean()), nontarget_mean=np.asarray(ranked.mean(nontarget=True)))
  partial = path.parent / (path.name + ".tmp")
  partial.write_bytes(buffer.getvalue())
  partial.replace(path)
  return path


def read_curves(workdir) -> Dict[int, zipf_law.RankedProbabilitySums]:
  """Every saved evaluation of a workdir, by step (empty if none), as NumPy sums."""
  folder = epath.Path(workdir) / CURVES_DIR
  if not folder.exists():
    return {}
  curves = {}
  for path in folder.iterdir():
    match = _FILE.fullmatch(path.name)
    if match is None:
      continue
    with path.open("rb") as f:
      data = np.load(io.BytesIO(f.read()))
      curves[int(match.group(1))] = zipf_law.RankedProbabilitySums(
          probs=data["probs"], nontarget=data["nontarget"], count=data["count"])
  return dict(sorted(curves.items()))


def record_evaluation(workdir, step: int, ranked: zipf_law.RankedProbabilitySums
                      ) -> Mapping[str, float]:
  """Saves the evaluation's curve (process 0) and returns the scalars to log."""
  ranked = jax.device_get(ranked)
  if jax.process_index() == 0:
    save_curve(workdir, step, ranked)
  return fit_scalars(ranked)
