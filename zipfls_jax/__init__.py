"""zipfls_jax: Zipf's Label Smoothing (ECCV 2022) as pure, jittable JAX functions.

The top-level package is the loss only: it imports jax and numpy, never
flax, optax or TensorFlow. Models, input pipelines and training live in the
subpackages `zipfls_jax.models`, `zipfls_jax.data` and `zipfls_jax.training`.
"""
from zipfls_jax.losses import (
    DEFAULT_LAM,
    RANK_BY,
    ZipfTerms,
    label_smooth_zipf_loss,
    label_smoothing_loss,
    masked_batch_mean,
    zipf_label_smoothing_loss,
    zipf_label_smoothing_terms,
    zipf_loss,
)
from zipfls_jax.ranks import rank_max, rank_min, topk_correct, vote_counts
from zipfls_jax.targets import DISTRIBUTIONS, TargetDistribution, rank_weights, zipf_targets
from zipfls_jax.validation import check_labels, check_votes
from zipfls_jax.votes import dense_votes, upsample_bilinear

# The paper's label-smoothing and self-distillation baselines (issue 9/10).
from zipfls_jax.self_distillation import (
    OLSState,
    bake_targets,
    byot_exit_loss,
    byot_feature_loss,
    cs_kd_loss,
    ddgsd_loss,
    kd_loss,
    linear_mmd,
    ols_init,
    ols_loss,
    ols_next_epoch,
    ols_update,
    ps_kd_alpha,
    ps_kd_targets,
    soft_cross_entropy,
    symmetric_kl_loss,
    tf_kd_regularization_loss,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LAM",
    "DISTRIBUTIONS",
    "RANK_BY",
    "TargetDistribution",
    "ZipfTerms",
    "check_labels",
    "check_votes",
    "dense_votes",
    "label_smooth_zipf_loss",
    "label_smoothing_loss",
    "masked_batch_mean",
    "rank_max",
    "rank_min",
    "rank_weights",
    "topk_correct",
    "upsample_bilinear",
    "vote_counts",
    "zipf_label_smoothing_loss",
    "zipf_label_smoothing_terms",
    "zipf_loss",
    "zipf_targets",
]

# The baselines' exports, kept as their own block.
__all__ += [
    "OLSState",
    "bake_targets",
    "byot_exit_loss",
    "byot_feature_loss",
    "cs_kd_loss",
    "ddgsd_loss",
    "kd_loss",
    "linear_mmd",
    "ols_init",
    "ols_loss",
    "ols_next_epoch",
    "ols_update",
    "ps_kd_alpha",
    "ps_kd_targets",
    "soft_cross_entropy",
    "symmetric_kl_loss",
    "tf_kd_regularization_loss",
]
