"""Evaluating a tokenizer run: rFID, PSNR, SSIM, LPIPS and codebook usage over its eval split.

    from vqjax.evaluation import runs, tokenizer_eval
    run = runs.find_run("runs/vitvqgan_tiny")
    params, label = runs.load_inception(None)
    tokenizer_eval.evaluate_tokenizer(run, runs.EvalOptions(), params, label)   # flat dict

`evaluators.evaluate(workdir, options)` calls it for `config.trainer == "tokenizer"` and writes
the outputs; see docs/evaluation.md for the definitions.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqjax import inference
from vqjax.evaluation import inception, runner
from vqjax.evaluation.host import to_host
from vqjax.evaluation.runs import (
    EvalOptions,
    Run,
    SplitBatches,
    codebook_counter,
    default_reference_path,
    progress_bar,
    weights_kind,
)
from vqjax.losses import perceptual
from vqjax.train import mesh as mesh_lib


def evaluate_tokenizer(run: Run, options: EvalOptions, inception_params,
                       inception_label: str) -> dict:
    """rFID (skipped without `inception_params`), PSNR, SSIM, LPIPS (--lpips) and the codebook's
    usage/perplexity of checkpoint `run` over the first `options.num_examples` eval images."""
    config = run.config
    ds = config.dataset
    split = options.split or ds.eval_split

    # -- mesh over this host's devices, the model restored onto it (vqjax.load) -------------------
    devices = jax.local_devices()
    mesh = mesh_lib.make_mesh(fsdp=options.fsdp, devices=devices)
    tokenizer = inference.load(run.workdir, run.step, use_ema=options.use_ema, mesh=mesh)
    eps = config.get("loss", {}).get("logit_laplace_eps")
    replicated = mesh_lib.replicated(mesh)

    # -- data: the eval split in order, center crops, the last batch padded (mask=False) ----------
    split_batches = SplitBatches(config, options, mesh)
    examples = split_batches.examples

    # -- the model (+ LPIPS) on one batch, jitted once ------------------------------------------
    lpips_params = None
    lpips_fn = None
    if options.lpips:
        lpips_fn, lpips_params = perceptual.load_lpips("vgg16")
        lpips_params = jax.device_put(lpips_params, replicated)

    def forward(variables, lpips_params, images):
        recon, indices = inference.reconstruct_images(tokenizer.model, variables, images, eps)
        distance = (lpips_fn(lpips_params, recon, images) if lpips_fn is not None
                    else jnp.zeros((images.shape[0],), jnp.float32))
        return recon, indices, distance

    forward = jax.jit(forward)
    with_fid = inception_params is not None
    if with_fid:
        inception_params = jax.device_put(inception_params, replicated)

    def features_fn(images):
        return inception.inception_features(inception_params, images)

    quantizer = tokenizer.model.built_quantizer()
    codebook = codebook_counter(quantizer)

    # evaluate_reconstruction calls reconstruct_fn once per batch, in order: LPIPS values and
    # masks are paired by position.
    masks: list[np.ndarray] = []
    distances: list[Any] = []
    timing: dict[str, float] = {}

    bar = progress_bar(examples, f"eval step {run.step}", "img", options.progress)

    def batches():
        for batch in split_batches:
            mask = batch["mask"]
            masks.append(mask)
            yield mesh_lib.global_batch(mesh, batch)
            if bar is not None:
                bar.update(int(mask.sum()))
        timing["images"] = time.perf_counter() - start
        if bar is not None:  # before the Frechet distance (eigendecompositions: seconds)
            bar.close()

    def reconstruct_fn(images):
        recon, indices, distance = forward(tokenizer.variables, lpips_params, images)
        distances.append(distance)
        return recon, indices

    stats_path = None
    if with_fid:
        stats_path = (pathlib.Path(options.reference_stats).expanduser() if options.reference_stats
                      else default_reference_path(run, ds.name, split, ds.image_size, examples,
                                                  weights_kind(inception_params, inception_label)))
    reference_cached = stats_path is not None and stats_path.is_file()
    start = time.perf_counter()
    try:
        metrics = runner.evaluate_reconstruction(
            reconstruct_fn, batches(), reference=stats_path, data_range=2.0, codebook=codebook,
            features_fn=features_fn, fid=with_fid)
    finally:
        split_batches.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if len(distances) != len(masks):
        raise RuntimeError(f"{len(distances)} LPIPS batches for {len(masks)} data batches")

    results = {
        **({"rfid": metrics["rfid"]} if with_fid else {"rfid_skipped": inception_label}),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "examples": int(metrics["examples"]),
    }
    if lpips_fn is not None:
        total = sum(float(np.sum(to_host(d)[m], dtype=np.float64))
                    for d, m in zip(distances, masks))
        results["lpips"] = total / max(results["examples"], 1)
    for key, value in metrics.items():
        if key.startswith("codebook/"):
            results[key[len("codebook/"):]] = value
    results.update({
        "codebook_size": int(quantizer.codebook_size),
        "quantizer": str(config.quantizer.name),
        **({"reference_stats": str(stats_path), "reference_stats_cached": reference_cached}
           if with_fid else {}),
        "seconds": seconds,  # all of it, from the first batch to the Frechet distance
        # model, LPIPS and Inception features (compilation included), not the Frechet distance
        "images_per_s": results["examples"] / max(timing.get("images", seconds), 1e-9),
    })
    return results
