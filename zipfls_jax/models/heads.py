"""The voting head: global average pooling + a linear classifier + dense votes.

A drop-in replacement for "global average pool -> `nn.Dense(num_classes)`"
in any Flax backbone. Its parameters are exactly `nn.Dense`'s (`kernel`
(D, C), `bias` (C,)), and the same kernel and bias produce both the pooled
logits and the per-position votes of docs/method.md section 1.1, so a model gets Zipf's label
smoothing by swapping its head and nothing else. The head never backpropagates
through the votes and never changes the pooled logits when votes are asked for.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from zipfls_jax.models import initializers
from zipfls_jax.models.outputs import ModelOutput, join_exits
from zipfls_jax.votes import dense_votes


def check_vote_upsample(vote_upsample) -> None:
  """Raises ValueError unless `vote_upsample` is None or an int >= 1."""
  if vote_upsample is not None and (
      not isinstance(vote_upsample, int) or isinstance(vote_upsample, bool) or vote_upsample < 1):
    raise ValueError(
        f"`vote_upsample` must be None or an integer factor >= 1, got {vote_upsample!r}.")


class VotingHead(nn.Module):
  """Pooled logits and dense votes from one linear classifier.

  Example (a user's backbone, with the head where `nn.Dense` used to be):

    >>> import jax, jax.numpy as jnp
    >>> from flax import linen as nn
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x, *, votes=False):
    ...     x = nn.relu(nn.Conv(16, (3, 3))(x))
    ...     return VotingHead(10, vote_upsample=2)(x, votes=votes)
    >>> x = jnp.ones((2, 8, 8, 3))
    >>> variables = Net().init(jax.random.key(0), x)
    >>> out = Net().apply(variables, x, votes=True)
    >>> out.logits.shape, out.votes.shape
    ((2, 10), (2, 256))

  Attributes:
    num_classes: C.
    vote_upsample: None, or an integer factor for a bilinear resize of the
      feature map before voting (docs/method.md section 1.1: the authors use 2). Pooling always
      uses the original map.
    dropout_rate: dropout on the pooled features before the classifier (as in
      torchvision's MobileNetV2); votes see no dropout.
    kernel_init, bias_init: as `nn.Dense` (and with its defaults).
    param_dtype: dtype of `kernel` and `bias` (float32 by default).
  """
  num_classes: int
  vote_upsample: Optional[int] = None
  dropout_rate: float = 0.0
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self,
               feature_map: jax.Array,
               *,
               votes: bool = False,
               deterministic: bool = True) -> ModelOutput:
    """Classifies a (N, H, W, D) feature map.

    Args:
      feature_map: (N, H, W, D) last feature map, in any float dtype.
      votes: also return (N, H' * W') int32 dense votes.
      deterministic: disables dropout (evaluation); training with
        `dropout_rate > 0` needs a 'dropout' rng.

    Returns:
      `ModelOutput` with float32 `logits` (N, C), float32 `features` (N, D)
      and `votes` (None unless asked for).
    """
    if feature_map.ndim != 4:
      raise ValueError(
          f"`feature_map` must be (N, H, W, D), got shape {tuple(feature_map.shape)}.")
    check_vote_upsample(self.vote_upsample)
    depth = feature_map.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (depth, self.num_classes), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.num_classes,), self.param_dtype)
    # Lets tests and analysis read the exact map that was pooled and voted.
    self.sow("intermediates", "feature_map", feature_map)

    # The classifier runs in float32 whatever the backbone's dtype: it is
    # tiny, and the loss wants float32 logits.
    features = jnp.mean(feature_map, axis=(1, 2), dtype=jnp.float32)
    pooled = nn.Dropout(self.dropout_rate, deterministic=deterministic)(features) \
        if self.dropout_rate > 0 else features
    logits = jnp.dot(pooled, kernel.astype(jnp.float32)) + bias.astype(jnp.float32)
    ids = None
    if votes:
      ids = dense_votes(feature_map, kernel, bias, upsample=self.vote_upsample)
    return ModelOutput(logits=logits, features=features, votes=ids)


def linear_heads(final_map: jax.Array,
                 exit_maps: Sequence[jax.Array] = (),
                 *,
                 num_classes: int,
                 vote_upsample: Optional[int],
                 votes: bool,
                 vote_exits: bool = False,
                 zero_bias: bool = False,
                 exit_features: bool = False) -> ModelOutput:
  """The final head and one head per exit map, initialised like `torch.nn.Linear`.

  Call it inside a model's compact `__call__`: the heads become that model's
  submodules 'head' and 'exit1_head', 'exit2_head', ... (shallowest exit
  first). Kernels are PyTorch's default uniform; biases too, or zero with
  `zero_bias` (torchvision's DenseNet). The exits vote only with
  `vote_exits`; their logits and votes join the final head's by `join_exits`,
  and so do their pooled features with `exit_features`.
  """
  def head(feature_map, name, vote):
    bias_init = (nn.initializers.zeros if zero_bias
                 else initializers.torch_default_bias(feature_map.shape[-1]))
    return VotingHead(
        num_classes,
        vote_upsample=vote_upsample,
        kernel_init=initializers.torch_default_kernel,
        bias_init=bias_init,
        name=name)(feature_map, votes=vote)

  final = head(final_map, "head", votes)
  exits = [head(m, f"exit{k + 1}_head", votes and vote_exits) for k, m in enumerate(exit_maps)]
  return join_exits(final, exits, vote_exits=vote_exits, exit_features=exit_features)
