"""Evaluating a checkpoint of any run kind: `evaluate(workdir, options)`, the function behind
`python -m launch.evaluate`.

    from vqjax.evaluation.evaluators import EvalOptions, evaluate
    results = evaluate("runs/vitvqgan_tiny", EvalOptions(num_examples=1000))

It finds the checkpoint (`runs.find_run`), loads the FID Inception weights once, calls the
evaluator registered for the checkpoint's `config.trainer` and writes `<workdir>/eval_<step>.json`
and TensorBoard scalars.

Adding a run kind: write `evaluate_<trainer>(run, options, inception_params, inception_label)` in
its own module of this package, returning a flat dict of numbers (`run.config` is the
checkpoint's config), and register it in `EVALUATORS` under its `config.trainer`; checkpoint
lookup, the Inception weights and the outputs (JSON, TensorBoard, printing) are shared.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vqjax.evaluation import inception
from vqjax.evaluation.maskgit_eval import evaluate_maskgit
from vqjax.evaluation.runs import (  # noqa: F401 (the public names of `launch.evaluate`)
    INCEPTION_SCORE_UNAVAILABLE,
    CheckpointNotFoundError,
    EvalOptions,
    Run,
    UnsupportedRunError,
    find_run,
    load_inception,
    log,
    report,
    results_path,
    write_results,
)
from vqjax.evaluation.tokenizer_eval import evaluate_tokenizer

# One evaluator per config.trainer.
EVALUATORS: dict[str, Callable[..., dict]] = {
    "tokenizer": evaluate_tokenizer,
    "maskgit": evaluate_maskgit,
}


def evaluate(workdir: str | os.PathLike, options: EvalOptions = EvalOptions()) -> dict:
    """Evaluate checkpoint `options.step` (default: latest) of `workdir`; writes
    `<workdir>/eval_<step>.json` and TensorBoard scalars, and returns the results."""
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
