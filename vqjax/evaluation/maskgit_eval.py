"""Evaluating a MaskGIT run: FID and Inception Score of its samples, codebook usage of the
sampled tokens.

    from vqjax.evaluation import maskgit_eval, runs
    run = runs.find_run("runs/maskgit_tiny")
    params, label = runs.load_inception(None)
    maskgit_eval.evaluate_maskgit(run, runs.EvalOptions(num_samples=1000), params, label)

`evaluators.evaluate(workdir, options)` calls it for `config.trainer == "maskgit"` and writes the
outputs; see docs/evaluation.md ("gFID") for the conventions.
"""

from __future__ import annotations

import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from vqjax import inference
from vqjax.evaluation import fid, inception, runner
from vqjax.evaluation.host import to_host
from vqjax.evaluation.runs import (
    INCEPTION_SCORE_UNAVAILABLE,
    EvalOptions,
    Run,
    SplitBatches,
    UnsupportedRunError,
    codebook_counter,
    default_reference_path,
    progress_bar,
    round_up,
    weights_kind,
)
from vqjax.models import maskgit as maskgit_lib
from vqjax.train import mesh as mesh_lib


def sample_labels(num_classes: int | None, start: int, batch_size: int):
    """Labels [batch_size] int32 of samples start, start + 1, ...: sample i gets class
    i mod num_classes, so classes are balanced (to one sample) over any count, and every
    consecutive run of num_classes samples (each Inception Score split) holds all of them.
    Unconditional (None): zeros, used for the batch size only."""
    positions = start + np.arange(batch_size, dtype=np.int64)
    return (positions % num_classes if num_classes else np.zeros_like(positions)).astype(np.int32)


def sharded_sampler(maskgit, mesh, **decode_options) -> Callable:
    """`(params, tokenizer_variables, rng, labels [B]) -> (tokens, images)` for a `vqjax.load`
    MaskGIT handle, jitted with its outputs split over every device along the batch (an
    unconditional model has no batch-sharded input; without this every device would decode the
    whole batch)."""
    sharding = mesh_lib.batch_sharding(mesh)
    model, tokenizer, grid = maskgit.model, maskgit.tokenizer, maskgit.grid
    unconditional = model.num_classes is None
    eps = tokenizer.config.get("loss", {}).get("logit_laplace_eps")

    def sample(params, tokenizer_variables, rng, labels):
        out = maskgit_lib.generate(model, {"params": params}, rng,
                                   None if unconditional else labels, grid=grid,
                                   batch_size=labels.shape[0], **decode_options)
        images = inference.decode_indices(tokenizer.model, tokenizer_variables, out.tokens, eps)
        return out.tokens, images

    return jax.jit(sample, out_shardings=(sharding, sharding))


def uint8_features(features_fn: Callable, mesh, images) -> Any:
    """pool3 features [N, D] (host) of uint8 images [N, H, W, 3] (an ADM reference batch's
    `arr_0`), batch-sharded over the mesh: padded to a multiple of the device count, the padding
    dropped from the result."""
    count = images.shape[0]
    padded = np.zeros((round_up(count, mesh.size), *images.shape[1:]), images.dtype)
    padded[:count] = images
    sharded = jax.device_put(padded, mesh_lib.batch_sharding(mesh))
    return to_host(features_fn(inception.images_from_uint8(sharded))[0])[:count]


def evaluate_maskgit(run: Run, options: EvalOptions, inception_params,
                     inception_label: str) -> dict:
    """FID (skipped without `inception_params`) and Inception Score of `options.num_samples`
    samples of MaskGIT run `run`, and the tokenizer's codebook usage over the sampled tokens."""
    config = run.config
    ds = config.dataset
    if not options.use_ema:
        raise UnsupportedRunError(
            "--use_ema=False does not apply to MaskGIT runs: they are sampled with the EMA params "
            "vqjax.load restores (a copy of the params when config.ema_decay is 0)")
    if options.num_samples < 1:
        raise ValueError(f"--num_samples={options.num_samples}: must be >= 1")
    if not 1 <= options.is_splits <= options.num_samples:
        raise ValueError(f"--is_splits={options.is_splits}: needs 1 <= splits <= --num_samples="
                         f"{options.num_samples}")

    # -- mesh over this host's devices; the run (and its tokenizer) restored onto it -------------
    mesh = mesh_lib.make_mesh(fsdp=options.fsdp, devices=jax.local_devices())
    maskgit = inference.load(run.workdir, run.step, mesh=mesh)
    if not isinstance(maskgit, inference.MaskGIT):
        raise UnsupportedRunError(f"{run.workdir} is a "
                                  f"{maskgit.config.get('trainer', 'tokenizer')!r} run, not a "
                                  "MaskGIT run")
    params, tokenizer_variables = maskgit.params, maskgit.tokenizer.variables
    sharding = mesh_lib.batch_sharding(mesh)
    with_fid = inception_params is not None
    if with_fid:
        kind = weights_kind(inception_params, inception_label)
        inception_params = jax.device_put(inception_params, mesh_lib.replicated(mesh))

    def features_fn(images):  # [B, H, W, 3] in [-1, 1], batch-sharded -> (pool3, logits)
        # ADM's pipeline (uint8, TF1 resize) on both sides: docs/evaluation.md, "gFID".
        return inception.adm_inception_features(inception_params, images)

    # -- reference statistics: a given file, else the split's images (computed once, cached) ----
    start = time.perf_counter()
    given = pathlib.Path(options.reference_stats).expanduser() if options.reference_stats else None
    real_batches = None
    if not with_fid:
        stats_path = reference = None
    elif given is not None and given.is_file():
        stats_path = given
    else:
        real_batches = SplitBatches(config, options, mesh)
        stats_path = given or default_reference_path(
            run, ds.name, real_batches.split, ds.image_size, real_batches.examples, kind)
    reference_cached = stats_path is not None and stats_path.is_file()
    if not with_fid:
        pass
    elif reference_cached:
        if real_batches is not None:
            real_batches.close()
        reference = fid.load_stats(
            stats_path, feature_fn=lambda images: uint8_features(features_fn, mesh, images),
            batch_size=round_up(250, mesh.size))
    else:
        stats = fid.FeatureStats()
        bar = progress_bar(real_batches.examples, f"reference {ds.name}/{real_batches.split}", "img",
                        options.progress)
        try:
            for batch in real_batches:
                batch = mesh_lib.global_batch(mesh, batch)
                stats.update(features_fn(batch["image"])[0], batch["mask"])
                if bar is not None:
                    bar.update(int(np.sum(to_host(batch["mask"]))))
        finally:
            real_batches.close()
            if bar is not None:
                bar.close()
        reference = stats.result()
        fid.save_stats(stats_path, reference)
    reference_seconds = time.perf_counter() - start

    # -- samples: batch i from fold_in(key(seed), i), sharded over the devices ------------------
    overrides = dict(num_steps=options.decode_steps, temperature=options.temperature,
                     choice_temperature=options.choice_temperature,
                     guidance_scale=options.guidance_scale, top_k=options.top_k,
                     top_p=options.top_p)
    decode = maskgit.decode_options(**overrides)
    sample_fn = sharded_sampler(maskgit, mesh, **decode)
    num_samples = options.num_samples
    num_classes = maskgit.num_classes
    batch_size = round_up(options.batch_size or config.batch_size, mesh.size)
    batch_size = min(batch_size, round_up(num_samples, mesh.size))
    num_batches = math.ceil(num_samples / batch_size)

    quantizer = maskgit.tokenizer.model.built_quantizer()
    codebook = codebook_counter(quantizer)

    key = jax.random.key(options.seed)
    timing: dict[str, float] = {}
    bar = progress_bar(num_samples, f"sample step {run.step}", "img", options.progress)

    def batches():
        for i in range(num_batches):
            labels = jax.device_put(sample_labels(num_classes, i * batch_size, batch_size),
                                    sharding)
            tokens, images = sample_fn(params, tokenizer_variables, jax.random.fold_in(key, i),
                                       labels)
            mask = i * batch_size + np.arange(batch_size) < num_samples  # the extras: dropped
            if codebook is not None:
                codebook.update(tokens, mask)
            yield {"image": images, "mask": mask}
            if bar is not None:
                bar.update(int(mask.sum()))
        timing["samples"] = time.perf_counter() - sample_start
        if bar is not None:  # before the Frechet distance
            bar.close()

    sample_start = time.perf_counter()
    try:
        if with_fid:
            metrics = runner.evaluate_samples(batches(), reference=reference,
                                                  splits=options.is_splits,
                                                  features_fn=features_fn)
        else:  # no Inception: the samples' codebook usage only
            metrics = {"examples": sum(float(np.sum(b["mask"])) for b in batches()),
                       "fid_skipped": inception_label}
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - sample_start
    if "inception_score" not in metrics:
        metrics["inception_score_skipped"] = (
            inception_label if not with_fid else
            "these Inception weights have no classifier (logits): " + INCEPTION_SCORE_UNAVAILABLE)

    results = {
        **{k: metrics[k] for k in ("fid", "fid_skipped", "inception_score",
                                   "inception_score_std", "inception_score_skipped")
           if k in metrics},
        "examples": int(metrics["examples"]),
        "params": "ema" if config.get("ema_decay", 0.0) > 0 else "params",
    }
    if codebook is not None and codebook.counts is not None:
        results.update(codebook.result())
    results.update({
        "num_classes": int(num_classes or 0),
        "seed": int(options.seed),
        "is_splits": int(options.is_splits),
        **{k: (0 if v is None else v) for k, v in decode.items()},  # None: off
        "batch_size": int(batch_size),
        "codebook_size": int(quantizer.codebook_size),
        "tokenizer_workdir": str(config.tokenizer_workdir),
        "tokenizer_step": int(maskgit.tokenizer.step),
        **({"reference_stats": str(stats_path), "reference_stats_cached": reference_cached,
            "reference_examples": int(reference.count), "reference_seconds": reference_seconds}
           if with_fid else {}),
        "seconds": seconds,  # sampling, Inception, Frechet distance (not the reference statistics)
        # sampling and Inception features (compilation included), not the Frechet distance
        "images_per_s": num_samples / max(timing.get("samples", seconds), 1e-9),
    })
    return results
