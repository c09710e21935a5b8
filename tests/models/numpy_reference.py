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


# --- PyTorch-layout layers (NCHW activations, OIHW kernels), for the blocks ---
# Written from the definitions of torch.nn.Conv2d, BatchNorm2d and the
# authors' CIFAR blocks (docs/method.md section 5). Parameters are looked up
# by their PyTorch names in a flat dict: `p[prefix + 'conv1.weight']`.

BN_EPS = 1e-5


def conv2d(x, weight, *, stride=1, padding=None, groups=1):
  """torch.nn.functional.conv2d, float64, zero padding `padding` (default k // 2)."""
  x = np.asarray(x, np.float64)
  weight = np.asarray(weight, np.float64)
  out_ch, in_per_group, kh, kw = weight.shape
  pad = kh // 2 if padding is None else padding
  n, c, h, w = x.shape
  xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  oh = (h + 2 * pad - kh) // stride + 1
  ow = (w + 2 * pad - kw) // stride + 1
  out = np.zeros((n, out_ch, oh, ow))
  out_per_group = out_ch // groups
  for g in range(groups):
    xg = xp[:, g * in_per_group:(g + 1) * in_per_group]
    wg = weight[g * out_per_group:(g + 1) * out_per_group]
    for i in range(kh):
      for j in range(kw):
        patch = xg[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
        out[:, g * out_per_group:(g + 1) * out_per_group] += np.einsum(
            "nchw,oc->nohw", patch, wg[:, :, i, j])
  return out


def batch_norm(x, p, prefix, *, train):
  """torch.nn.BatchNorm2d (eps 1e-5) on NCHW `x`.

  Train mode normalises with the batch's mean and biased variance; eval mode
  with `running_mean` / `running_var`. Returns (y, batch mean, biased batch
  variance); the two statistics are None in eval mode.
  """
  x = np.asarray(x, np.float64)
  if train:
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
  else:
    mean, var = p[prefix + "running_mean"], p[prefix + "running_var"]
  shape = (1, -1, 1, 1)
  y = (x - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + BN_EPS)
  y = y * np.reshape(p[prefix + "weight"], shape) + np.reshape(p[prefix + "bias"], shape)
  return (y, mean, var) if train else (y, None, None)


def relu(x):
  return np.maximum(x, 0.0)


def preact_block(x, p, prefix="", *, stride=1, train=True):
  """The authors' CIFAR `PreActBlock`: o = ReLU(bn1(x)); conv2(ReLU(bn2(conv1(o)))) + shortcut(o).

  The shortcut is `shortcut.0` (1x1, strided) when present, else o itself.
  """
  o = relu(batch_norm(x, p, prefix + "bn1.", train=train)[0])
  if prefix + "shortcut.0.weight" in p:
    shortcut = conv2d(o, p[prefix + "shortcut.0.weight"], stride=stride, padding=0)
  else:
    shortcut = o
  y = conv2d(o, p[prefix + "conv1.weight"], stride=stride, padding=1)
  y = relu(batch_norm(y, p, prefix + "bn2.", train=train)[0])
  return conv2d(y, p[prefix + "conv2.weight"], padding=1) + shortcut


def dense_layer(x, p, prefix="", *, train=True):
  """The authors' CIFAR DenseNet `Bottleneck`: cat([conv2(R(bn2(conv1(R(bn1(x)))))), x])."""
  y = conv2d(relu(batch_norm(x, p, prefix + "bn1.", train=train)[0]), p[prefix + "conv1.weight"],
             padding=0)
  y = conv2d(relu(batch_norm(y, p, prefix + "bn2.", train=train)[0]), p[prefix + "conv2.weight"],
             padding=1)
  return np.concatenate([y, np.asarray(x, np.float64)], axis=1)


def byot_sep_conv(x, p, prefix=""):
  """BYOT's `SepConv` (pytorch-self-distillation-final, resnet.py), train-mode BN, on NCHW `x`.

  depthwise 3x3 stride 2 (`op.0`), pointwise 1x1 (`op.1`), BN (`op.2`), ReLU,
  depthwise 3x3 stride 1 (`op.4`), pointwise 1x1 (`op.5`), BN (`op.6`), ReLU;
  convolutions pad 1 and have no bias.
  """
  channels = np.shape(x)[1]
  y = conv2d(x, p[prefix + "op.0.weight"], stride=2, padding=1, groups=channels)
  y = conv2d(y, p[prefix + "op.1.weight"], padding=0)
  y = relu(batch_norm(y, p, prefix + "op.2.", train=True)[0])
  y = conv2d(y, p[prefix + "op.4.weight"], padding=1, groups=channels)
  y = conv2d(y, p[prefix + "op.5.weight"], padding=0)
  return relu(batch_norm(y, p, prefix + "op.6.", train=True)[0])
