"""Independent NumPy/SciPy references written from the method's formulas.

docs/method.md sections 1-3 (and the README's table of distributions).

Loops and float64 on purpose: these must share no code with zipfls_jax.
"""
import numpy as np
from scipy import special, stats


def ranks_min(scores):
  return stats.rankdata(-np.asarray(scores, np.float64), method="min", axis=-1)


def weights(scores, name, *, power=1.0, smallest_prob=0.0, decay=1.0, lower_bound=1.0,
            upper_bound=None):
  """d_k for one row of scores, SPEC section 3."""
  scores = np.asarray(scores, np.float64)
  c = scores.shape[-1]
  r = stats.rankdata(-scores, method="min")
  if name == "zipf":
    return r ** -power
  if name == "constant":
    return np.ones(c)
  if name == "linear_decay":
    gap = 2 * (1 - c * smallest_prob) / ((c - 1) * c)
    return (c - r) * gap + smallest_prob
  if name == "exponential_decay":
    return np.exp(-decay * (r - 1))
  if name == "unbiased_zipf":
    r_max = stats.rankdata(-scores, method="max")
    ub = lower_bound + c if upper_bound is None else upper_bound
    width = (ub - lower_bound) / c
    out = np.empty(c)
    for k in range(c):
      a = lower_bound + (r[k] - 1) * width
      b = lower_bound + r_max[k] * width
      if power == 1.0:
        integral = np.log(b) - np.log(a)
      else:
        integral = (b ** (1 - power) - a ** (1 - power)) / (1 - power)
      out[k] = integral / (r_max[k] - r[k] + 1)
    return out
  raise ValueError(name)


def targets(scores, labels, name="zipf", **kw):
  scores = np.asarray(scores)
  out = np.zeros(scores.shape, np.float64)
  for i in range(scores.shape[0]):
    d = weights(scores[i], name, **kw)
    d[labels[i]] = 0.0
    out[i] = d / d.sum() if d.sum() > 0 else np.where(np.arange(len(d)) == labels[i], 0,
                                                        1 / (len(d) - 1))
  return out


def counts(votes, num_classes):
  """Vote histogram; ids outside [0, C) are ignored, as the loss documents."""
  out = np.zeros((len(votes), num_classes), np.int64)
  for i, row in enumerate(votes):
    for v in row:
      if 0 <= v < num_classes:
        out[i, v] += 1
  return out


def kl_non_target(logits, labels, q):
  """sum_{j != y} q_j (log q_j - log_softmax_{j != y}(z)_j), per example."""
  logits = np.asarray(logits, np.float64)
  out = np.empty(len(logits))
  for i in range(len(logits)):
    keep = np.arange(logits.shape[1]) != labels[i]
    z, qi = logits[i, keep], np.asarray(q[i], np.float64)[keep]
    log_p = z - special.logsumexp(z)
    out[i] = np.sum(special.xlogy(qi, qi) - qi * log_p)
  return out


def cross_entropy(logits, labels):
  logits = np.asarray(logits, np.float64)
  return special.logsumexp(logits, axis=-1) - logits[np.arange(len(labels)), labels]


def smoothed_cross_entropy(logits, labels, soft, eps):
  logits = np.asarray(logits, np.float64)
  log_p = logits - special.logsumexp(logits, axis=-1, keepdims=True)
  out = np.empty(len(logits))
  for i in range(len(logits)):
    t = eps * np.asarray(soft[i], np.float64)
    t[labels[i]] = 1 - eps
    out[i] = -np.sum(t * log_p[i])
  return out


def bilinear_upsample_torch(x, factor):
  """PyTorch F.interpolate(bilinear, align_corners=False) on (N, H, W, D)."""
  n, h, w, d = x.shape
  out = np.empty((n, h * factor, w * factor, d), np.float64)

  def source(i, size):
    s = max((i + 0.5) / factor - 0.5, 0.0)
    i0 = min(int(np.floor(s)), size - 1)
    i1 = min(i0 + 1, size - 1)
    return i0, i1, s - i0

  for oy in range(h * factor):
    y0, y1, ly = source(oy, h)
    for ox in range(w * factor):
      x0, x1, lx = source(ox, w)
      out[:, oy, ox] = ((1 - ly) * ((1 - lx) * x[:, y0, x0] + lx * x[:, y0, x1])
                        + ly * ((1 - lx) * x[:, y1, x0] + lx * x[:, y1, x1]))
  return out
