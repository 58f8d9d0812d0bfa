"""Evaluation: FID / Inception Score (the FID InceptionV3), PSNR / SSIM, codebook usage.

See docs/evaluation.md for the definitions and conventions, and how to get the Inception weights.
Evaluating a run's checkpoint (`python -m launch.evaluate`): `evaluators.evaluate(workdir,
EvalOptions(...))`, one evaluator module per run kind (`tokenizer_eval`, `maskgit_eval`) and the
pieces they share in `runs`; the FID weights' converter is `fid_weights`.
"""

from vqjax.evaluation.codebook import CodebookUsage, perplexity_from_counts, usage_from_counts
from vqjax.evaluation.fid import (
    FeatureStatistics,
    FeatureStats,
    cached_stats,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    inception_score,
    load_stats,
    save_stats,
    stats_from_batches,
    trace_sqrt_product,
)
from vqjax.evaluation.image_metrics import psnr, ssim
from vqjax.evaluation.inception import (
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    InceptionWeightsNotFoundError,
    adm_inception_features,
    adm_uint8,
    has_logits,
    images_from_uint8,
    inception_features,
    init_inception_params,
    load_inception_params,
    resize_bilinear_tf1,
)
from vqjax.evaluation.runner import evaluate_reconstruction, evaluate_samples

__all__ = [
    "CodebookUsage", "FID_WEIGHTS_URL", "adm_inception_features", "adm_uint8", "FIDInceptionV3",
    "FeatureStatistics", "FeatureStats",
    "InceptionWeightsNotFoundError", "cached_stats", "evaluate_reconstruction", "evaluate_samples",
    "feature_statistics", "frechet_distance", "frechet_distance_from_stats", "has_logits",
    "images_from_uint8",
    "inception_features", "inception_score", "init_inception_params", "load_inception_params",
    "resize_bilinear_tf1",
    "load_stats", "perplexity_from_counts", "psnr", "save_stats", "ssim", "stats_from_batches",
    "trace_sqrt_product", "usage_from_counts",
]
