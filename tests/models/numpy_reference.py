"""Independent NumPy references for the model tests (written from the formulas).

Nothing here imports zipfls_jax: bilinear x2 resizing as PyTorch defines it
for `align_corners=False`, global average pooling, and a linear head applied
per position with its argmax.
"""
import numpy as np


def bilinear_upsample(fmap: np.ndarray, factor: int) -> np.ndarray:
  """(N, H, W, D) -> (N, fH, fW, D), PyTorch `interpolate(bilinear, align_corners=False)`."""
  fmap = np.asarray(fmap, np.float64)

  def axis_weights(size):
    out = np.arange(size * factor)
    src = np.maximum((out + 0.5) / factor - 0.5, 0.0)   # PyTorch clamps below at 0
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, size - 1)
    frac = src - lo
    return lo, hi, frac

  n, h, w, d = fmap.shape
  lo, hi, frac = axis_weights(h)
  rows = fmap[:, lo] * (1 - frac)[None, :, None, None] + fmap[:, hi] * frac[None, :, None, None]
  lo, hi, frac = axis_weights(w)
  return rows[:, :, lo] * (1 - frac)[None, None, :, None] + rows[:, :, hi] * frac[None, None, :, None]


def pooled_logits(fmap, kernel, bias):
  features = np.asarray(fmap, np.float64).mean(axis=(1, 2))
  return features, features @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)


def position_logits(fmap, kernel, bias, upsample=None):
  """(N, P, C) logits of the head at every (resized) position, row-major."""
  fmap = np.asarray(fmap, np.float64)
  if upsample:
    fmap = bilinear_upsample(fmap, upsample)
  n, h, w, d = fmap.shape
  return fmap.reshape(n, h * w, d) @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)


def assert_votes_match(votes, logits, *, min_fraction=0.95):
  """votes == argmax(logits) wherever the top two logits are not a near-tie.

  Float32 vs float64 rounding may legitimately flip a near-tie; such positions
  are excluded, and most positions must remain to be compared.
  """
  votes = np.asarray(votes)
  assert votes.shape == logits.shape[:2], (votes.shape, logits.shape)
  top2 = np.sort(logits, axis=-1)[..., -2:]
  scale = np.abs(logits).max() + 1e-12
  clear = (top2[..., 1] - top2[..., 0]) > 1e-4 * scale
  assert clear.mean() >= min_fraction, f"too many near-ties: {clear.mean():.3f}"
  np.testing.assert_array_equal(votes[clear], logits.argmax(-1)[clear])
