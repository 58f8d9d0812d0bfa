r"""Evaluate a trained run: `python -m launch.evaluate --workdir=RUN`.

    python -m launch.evaluate --workdir=runs/vitvqgan_tiny                  # latest checkpoint
    python -m launch.evaluate --workdir=/data/runs/vitvqgan_b --step=500000 --num_examples=50000 \
        --reference_stats=stats/imagenet2012_validation_256px.npz

For a tokenizer (`config.trainer == "tokenizer"`) it restores the checkpoint (the config comes from
the checkpoint itself), runs the eval split through the model (EMA params unless --use_ema=False)
and reports, over the whole set:

- rfid: FID of the reconstructions against the same images' Inception statistics (computed once
  and cached in an .npz: --reference_stats, default `<workdir>/fid_stats/<dataset>_<split>_
  <res>px_<n>_<weights>.npz`);
- psnr, ssim (data range 2, images in [-1, 1]), lpips (v0.1, VGG16), per-image means;
- usage, perplexity (+ used_codes, tokens) of the codebook over every token of the set.

Results go to `<workdir>/eval_<step>.json` (`eval_<step>_params.json` with --use_ema=False),
TensorBoard scalars `evaluate/*` (`evaluate_params/*`) under `<workdir>/tensorboard`, and stdout.

The FID Inception weights are not downloaded: see docs/evaluation.md ("Weights"); a missing file is
an error that says where to get it. `--inception_weights=random` uses random weights instead: it
exercises the whole pipeline (tests) but its "rfid" is NOT a real FID.

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
                         "Examples to evaluate, from the start of the split (0: all).")
    flags.DEFINE_integer("batch_size", 0, "Global eval batch size (0: config.batch_size); rounded "
                         "up to a multiple of the device count.")
    flags.DEFINE_boolean("use_ema", True, "Evaluate the EMA params (else the raw params).")
    flags.DEFINE_string(
        "inception_weights", None,
        "FID InceptionV3 weights (.npz from launch/convert_inception.py, or .pth with torch). "
        "Default: $VQJAX_INCEPTION_WEIGHTS, else ~/.cache/vqjax/pt_inception-2015-12-05-6726825d"
        ".npz. 'random': random weights, for tests only (the FID is not a real FID).")
    flags.DEFINE_string(
        "reference_stats", None,
        "FID statistics of the real images (.npz): loaded if it exists, else computed from the "
        "eval images and written there. Default: <workdir>/fid_stats/<dataset>_<split>_<res>px_"
        "<n>_<weights>.npz.")
    flags.DEFINE_string("data_dir", None, "tfds data_dir (default: the one in the run's config).")
    flags.DEFINE_boolean("lpips", True, "Compute LPIPS (VGG16).")
    flags.DEFINE_integer("fsdp", 1, "Shard parameters over this many of the local devices.")
    flags.DEFINE_integer("data_threads", 4, "Threads decoding eval images.")


log = logging.getLogger("vqjax.evaluate")

RANDOM_WEIGHTS = "random"
# Codebooks larger than this (LFQ/BSQ with many bits) are not counted code by code.
MAX_COUNTED_CODEBOOK = 2**26


class CheckpointNotFoundError(FileNotFoundError):
    """The workdir has no (complete) checkpoint, or not the requested step."""


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

    workdir = pathlib.Path(workdir).expanduser()
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


def load_inception(weights: str | None):
    """(params, description): the FID Inception weights, or random ones for `weights="random"`.
    A missing file raises InceptionWeightsNotFoundError naming the file and where to get it."""
    from vqjax import evaluation

    if weights == RANDOM_WEIGHTS:
        log.warning("--inception_weights=random: random Inception weights, the FID is NOT a real "
                    "FID (for testing the pipeline only)")
        return evaluation.init_inception_params(0), "random (not a real FID)"
    if weights is None:
        from vqjax.evaluation import inception

        weights = os.environ.get(inception.WEIGHTS_ENV) or str(inception.DEFAULT_WEIGHTS_PATH)
    path = pathlib.Path(weights).expanduser()
    return evaluation.load_inception_params(path), str(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-")


def default_reference_path(run: Run, dataset: str, split: str, image_size: int, examples: int,
                           random_weights: bool) -> pathlib.Path:
    """Where the real images' FID statistics are cached: they depend on the images (dataset,
    split, resolution, count) and on the Inception weights, not on the model."""
    weights = "random" if random_weights else "inception"
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


# ------------------------------------------------------------------------------------------------
# Tokenizers: rFID, PSNR, SSIM, LPIPS, codebook usage
# ------------------------------------------------------------------------------------------------
def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def evaluate_tokenizer(run: Run, options: EvalOptions, inception_params,
                       inception_label: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vqjax import data as data_lib
    from vqjax import evaluation
    from vqjax.evaluation.host import to_host
    from vqjax.losses import perceptual
    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train import mesh as mesh_lib
    from vqjax.train.tokenizer import TokenizerTrainer

    config = run.config
    ds = config.dataset
    split = options.split or ds.eval_split
    data_dir = options.data_dir if options.data_dir is not None else (ds.data_dir or None)

    # -- mesh over this host's devices, model, state restored onto it -----------------------------
    devices = jax.local_devices()
    mesh = mesh_lib.make_mesh(fsdp=options.fsdp, devices=devices)
    trainer = TokenizerTrainer(config, mesh)
    abstract, shardings = trainer.state_shardings()
    checkpointer = ckpt_lib.Checkpointer(run.workdir, read_only=True)
    try:
        state, _, _ = checkpointer.restore(run.step, ckpt_lib.abstract_like(abstract, shardings))
    finally:
        checkpointer.close()
    params = state.ema_params if options.use_ema else state.params
    quantizer_state = state.quantizer_state
    replicated = mesh_lib.replicated(mesh)

    # -- data: the eval split in order, center crops, the last batch padded (mask=False) ----------
    batch_size = _round_up(options.batch_size or config.batch_size, mesh.size)
    probe = data_lib.input_pipeline(
        ds.name, split, global_batch_size=batch_size, image_size=ds.image_size, seed=config.seed,
        process_index=0, process_count=1, train=False, data_dir=data_dir, num_workers=0)
    available = probe.info.num_examples
    probe.close()
    examples = min(options.num_examples, available) if options.num_examples > 0 else available
    batch_size = min(batch_size, _round_up(examples, mesh.size))
    num_batches = math.ceil(examples / batch_size)
    it = data_lib.input_pipeline(
        ds.name, split, global_batch_size=batch_size, image_size=ds.image_size, seed=config.seed,
        process_index=0, process_count=1, train=False, data_dir=data_dir, num_workers=0,
        num_threads=options.data_threads)

    # -- the model (+ LPIPS) on one batch, jitted once ------------------------------------------
    lpips_params = None
    lpips_fn = None
    if options.lpips:
        lpips_fn, lpips_params = perceptual.load_lpips("vgg16")
        lpips_params = jax.device_put(lpips_params, replicated)

    def forward(params, quantizer_state, lpips_params, images):
        recon, aux = trainer.reconstruct(params, quantizer_state, images)
        distance = (lpips_fn(lpips_params, recon, images) if lpips_fn is not None
                    else jnp.zeros((images.shape[0],), jnp.float32))
        return recon, aux.indices, distance

    forward = jax.jit(forward)
    inception_params = jax.device_put(inception_params, replicated)

    def features_fn(images):
        return evaluation.inception_features(inception_params, images)

    quantizer = trainer.model.built_quantizer()
    codebook = None
    if quantizer.codebook_size <= MAX_COUNTED_CODEBOOK:
        codebook = evaluation.CodebookUsage.for_quantizer(quantizer)
    else:
        log.warning("codebook of %d codes: too large to count, no usage/perplexity",
                    quantizer.codebook_size)

    # evaluate_reconstruction calls reconstruct_fn once per batch, in order: LPIPS values and
    # masks are paired by position.
    masks: list[np.ndarray] = []
    distances: list[Any] = []
    timing: dict[str, float] = {}

    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=examples, unit="img", desc=f"eval step {run.step}", dynamic_ncols=True)

    def batches():
        for i in range(num_batches):
            try:
                local = next(it)
            except StopIteration:
                break
            position = i * batch_size + np.arange(batch_size)
            mask = np.asarray(local["mask"], bool) & (position < examples)
            masks.append(mask)
            yield mesh_lib.global_batch(mesh, {"image": local["image"], "mask": mask})
            if bar is not None:
                bar.update(int(mask.sum()))
        timing["images"] = time.perf_counter() - start
        if bar is not None:  # before the Frechet distance (a 2048x2048 sqrtm: seconds to minutes)
            bar.close()

    def reconstruct_fn(images):
        recon, indices, distance = forward(params, quantizer_state, lpips_params, images)
        distances.append(distance)
        return recon, indices

    stats_path = (pathlib.Path(options.reference_stats).expanduser() if options.reference_stats
                  else default_reference_path(run, ds.name, split, ds.image_size, examples,
                                              inception_label.startswith(RANDOM_WEIGHTS)))
    reference_cached = stats_path.is_file()
    start = time.perf_counter()
    try:
        metrics = evaluation.evaluate_reconstruction(
            reconstruct_fn, batches(), reference=stats_path, data_range=2.0, codebook=codebook,
            features_fn=features_fn)
    finally:
        it.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    if len(distances) != len(masks):
        raise RuntimeError(f"{len(distances)} LPIPS batches for {len(masks)} data batches")

    results = {
        "rfid": metrics["rfid"],
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
        "reference_stats": str(stats_path),
        "reference_stats_cached": reference_cached,
        "seconds": seconds,  # all of it, from the first batch to the Frechet distance
        # model, LPIPS and Inception features (compilation included), not the FID's sqrtm
        "images_per_s": results["examples"] / max(timing.get("images", seconds), 1e-9),
    })
    return results


# One evaluator per config.trainer. MaskGIT ("maskgit") will sample and use
# vqjax.evaluation.evaluate_samples (FID/IS against a reference batch) the same way.
EVALUATORS: dict[str, Callable[..., dict]] = {
    "tokenizer": evaluate_tokenizer,
}


# ------------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------------
def evaluate(workdir: str | os.PathLike, options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate checkpoint `options.step` (default: latest) of `workdir`; writes
    `<workdir>/eval_<step>.json` and TensorBoard scalars, and returns the results."""
    run = find_run(workdir, options.step)
    trainer = run.config.get("trainer", "tokenizer")
    if trainer not in EVALUATORS:
        raise ValueError(f"config.trainer={trainer!r} of {run.workdir}: no evaluator; available: "
                         f"{', '.join(sorted(EVALUATORS))}")
    if options.num_examples < 0 or options.batch_size < 0:
        raise ValueError("--num_examples and --batch_size must be >= 0")
    # Before anything slow: a missing weight file is an error that says where to get it.
    inception_params, inception_label = load_inception(options.inception_weights)
    metrics = EVALUATORS[trainer](run, options, inception_params, inception_label)
    ds = run.config.dataset
    results = {
        "step": run.step,
        "trainer": trainer,
        "params": "ema" if options.use_ema else "params",
        "dataset": str(ds.name),
        "split": options.split or str(ds.eval_split),
        "image_size": int(ds.image_size),
        "inception_weights": inception_label,
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
        data_threads=f.data_threads)
    try:
        results = evaluate(f.workdir, options)
    except CheckpointNotFoundError as e:
        raise SystemExit(f"launch.evaluate: {e}") from None
    except InceptionWeightsNotFoundError as e:
        raise SystemExit(
            f"launch.evaluate: {e}\n  (--inception_weights=random runs the pipeline with random "
            "weights, for testing only: its FID is not a real FID)") from None
    print(f"step {results['step']} ({results['params']} params), {results['dataset']}/"
          f"{results['split']}, {results['examples']} images -> {results['output']}")
    print(format_results(results))
    sys.stdout.flush()


if __name__ == "__main__":
    define_flags()
    app.run(main)
