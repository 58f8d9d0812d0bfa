"""What every run kind's evaluator shares: the options, the checkpoint, the Inception weights, the
eval split's batches and the outputs (JSON, TensorBoard, the printed report).

    run = find_run("runs/vitvqgan_tiny")              # latest checkpoint and its saved config
    inception_params, label = load_inception(None)     # (None, why) without weights: FID skipped
    write_results(run, results)                        # <workdir>/eval_<step>.json + TensorBoard

The evaluators themselves are `tokenizer_eval.evaluate_tokenizer` and
`maskgit_eval.evaluate_maskgit`; `evaluators.evaluate` picks one by `config.trainer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
from typing import Any

import ml_collections

from vqjax import data as data_lib
from vqjax.evaluation import inception
from vqjax.evaluation.codebook import CodebookUsage
from vqjax.paths import resolve
from vqjax.train import checkpoint as ckpt_lib

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
    """Everything the command line sets (see launch/evaluate.py's flags); shared by every
    trainer's evaluator."""

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
# The checkpoint
# ------------------------------------------------------------------------------------------------
def find_run(workdir: str | os.PathLike, step: int | None = None) -> Run:
    """The checkpoint `step` (default: latest) of `workdir` and its config, or a clear error."""
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


# ------------------------------------------------------------------------------------------------
# The Inception weights and the reference statistics' cache
# ------------------------------------------------------------------------------------------------
def no_weights_reason(path) -> str:
    """Why rFID/FID are skipped, and the one command that fixes it."""
    return (f"no FID Inception weights at {path}: run `{inception.MAKE_WEIGHTS_COMMAND}` "
            "(once; no download beyond pip)")


def load_inception(weights: str | None):
    """(params, description): the FID Inception weights, or random ones for `weights="random"`.
    With `weights=None` and no file at the default places: (None, why they are skipped). A
    missing file named explicitly raises InceptionWeightsNotFoundError saying where to get it."""
    if weights == RANDOM_WEIGHTS:
        log.warning("--inception_weights=random: random Inception weights, the FID is NOT a real "
                    "FID (for testing the pipeline only)")
        return inception.init_inception_params(0), "random (not a real FID)"
    if weights is None:
        path = inception.default_weights_path()
        if not path.is_file() and not os.environ.get(inception.WEIGHTS_ENV):
            return None, no_weights_reason(path)
    else:
        path = pathlib.Path(weights).expanduser()
    return inception.load_inception_params(path), str(path)


def weights_kind(inception_params, inception_label: str) -> str:
    """"random", "inception" (pytorch-fid's) or "inception-pool3" (the TF graph's): reference
    statistics computed with one are not valid for another."""
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


# ------------------------------------------------------------------------------------------------
# Data and counters
# ------------------------------------------------------------------------------------------------
def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def codebook_counter(quantizer) -> CodebookUsage | None:
    """A CodebookUsage for the quantizer's codes, or None (with a warning) when too large."""
    if quantizer.codebook_size <= MAX_COUNTED_CODEBOOK:
        return CodebookUsage.for_quantizer(quantizer)
    log.warning("codebook of %d codes: too large to count, no usage/perplexity",
                quantizer.codebook_size)
    return None


class SplitBatches:
    """The first `options.num_examples` images (0: all) of the eval split (`options.split`,
    default `config.dataset.eval_split`), in dataset order, center crops at the run's resolution,
    as host batches {"image", "mask"} of `batch_size` (--batch_size or config.batch_size, rounded
    up to the device count, at most the examples rounded up); rows past the end are mask=False.
    This host reads every row (process 0 of 1)."""

    def __init__(self, config, options: EvalOptions, mesh):
        self.split = options.split or config.dataset.eval_split
        batch_size = round_up(options.batch_size or config.batch_size, mesh.size)
        pipeline = dict(data_dir=options.data_dir, process_index=0, process_count=1)
        with data_lib.dataset_pipeline(config, self.split, batch_size, train=False,
                                       **pipeline) as probe:
            available = probe.info.num_examples
        self.examples = (min(options.num_examples, available) if options.num_examples > 0
                         else available)
        self.batch_size = min(batch_size, round_up(self.examples, mesh.size))
        self._it = data_lib.dataset_pipeline(config, self.split, self.batch_size, train=False,
                                             num_threads=options.data_threads, **pipeline)

    def __iter__(self):
        for _, local in data_lib.first_examples(self._it, self.examples, self.batch_size):
            yield {"image": local["image"], "mask": local["mask"]}

    def close(self) -> None:
        self._it.close()


def progress_bar(total: int, desc: str, unit: str, enabled: bool):
    """A tqdm bar, or None when disabled."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
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


def report(results: dict) -> str:
    """What `python -m launch.evaluate` prints: a headline, every result, what was skipped."""
    if results["trainer"] == "maskgit":
        against = (f" against {results['reference_stats']}" if results.get("reference_stats")
                   else "")
        headline = (f"step {results['step']} ({results['params']} params), {results['examples']} "
                    f"samples{against}, {results['images_per_s']:.1f} images/s -> "
                    f"{results['output']}")
    else:
        headline = (f"step {results['step']} ({results['params']} params), {results['dataset']}/"
                    f"{results['split']}, {results['examples']} images -> {results['output']}")
    lines = [headline, format_results(results)]
    for key in ("rfid_skipped", "fid_skipped", "inception_score_skipped"):
        if key in results:
            lines.append(f"{key.removesuffix('_skipped')} skipped: {results[key]}")
    return "\n".join(lines)
