"""zipfls_jax: Zipf's Label Smoothing (ECCV 2022) as pure, jittable JAX functions.

The top-level package is the loss and the Zipf's-law diagnostics
(`zipfls_jax.zipf_law`) only: it imports jax, chex and numpy, never
flax, optax or TensorFlow. Models, input pipelines and training live in the
subpackages `zipfls_jax.models`, `zipfls_jax.data` and `zipfls_jax.training`.
"""
from zipfls_jax.losses import (
    ZipfTerms,
    label_smooth_zipf_loss,
    label_smoothing_loss,
    masked_batch_mean,
    zipf_label_smoothing_loss,
    zipf_label_smoothing_terms,
    zipf_loss,
)
from zipfls_jax.ranks import rank_max, rank_min, vote_counts
from zipfls_jax.targets import DISTRIBUTIONS, rank_weights, zipf_targets
from zipfls_jax.validation import check_labels
from zipfls_jax.votes import dense_votes, upsample_bilinear
from zipfls_jax.zipf_law import (
    PowerLawFit,
    RankedProbabilitySums,
    fit_power_law,
    ranked_probability_sums,
    zipf_score_summary,
    zipf_scores,
)

__version__ = "0.1.0"

__all__ = [
    "DISTRIBUTIONS",
    "PowerLawFit",
    "RankedProbabilitySums",
    "ZipfTerms",
    "check_labels",
    "dense_votes",
    "fit_power_law",
    "label_smooth_zipf_loss",
    "label_smoothing_loss",
    "masked_batch_mean",
    "rank_max",
    "rank_min",
    "rank_weights",
    "ranked_probability_sums",
    "upsample_bilinear",
    "vote_counts",
    "zipf_label_smoothing_loss",
    "zipf_label_smoothing_terms",
    "zipf_loss",
    "zipf_score_summary",
    "zipf_scores",
    "zipf_targets",
]
