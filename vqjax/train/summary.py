"""What a run prints when it ends: its numbers, where its files are, and the next commands.

    print(run_summary("runs/vitvqgan_tiny"))

Read from the workdir alone (config.json, metrics.jsonl, images/, checkpoints/), so the same text
comes out at the end of `launch.train`, after `launch.evaluate` (with its results), or in a notebook.
Paths are shown relative to the current directory when the run lies under it, as a user typed them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping


def display_path(path: str | os.PathLike) -> str:
    """`path` relative to the current directory when it lies under it, else absolute."""
    path = Path(path).resolve()
    try:
        relative = path.relative_to(Path.cwd().resolve())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else "."


def last_rows(workdir: Path) -> tuple[dict, dict]:
    """The last logged training row and the last row with eval/ metrics of metrics.jsonl."""
    train, evaluation = {}, {}
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return train, evaluation
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if any(k.startswith("eval/") for k in row):
            evaluation = {**evaluation, **row} if row.get("step") == evaluation.get("step") else row
        elif "loss/loss" in row:
            train = row
    return train, evaluation


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _metric_line(results: Mapping[str, Any], prefix: str = "") -> str:
    """'PSNR 23.1 dB  SSIM 0.781  ...' from whichever of the known metrics are present."""
    get = lambda key: results.get(prefix + key)  # noqa: E731
    parts = []
    for key, fmt in (("psnr", "PSNR {:.2f} dB"), ("ssim", "SSIM {:.3f}"), ("lpips", "LPIPS {:.3f}"),
                     ("nll", "masked NLL {:.3f} nats"), ("accuracy", "masked accuracy {:.1%}"),
                     ("fid", "FID {:.2f}"), ("rfid", "rFID {:.2f}"),
                     ("inception_score", "IS {:.2f}")):
        if get(key) is not None:
            parts.append(fmt.format(float(get(key))))
    usage = get("usage") if get("usage") is not None else get("codebook_usage")
    if usage is not None:
        perplexity = get("perplexity") if get("perplexity") is not None else get(
            "codebook_perplexity")
        parts.append(f"codebook usage {_percent(float(usage))}"
                     + (f" (perplexity {float(perplexity):.0f})" if perplexity is not None else ""))
    for key, name in (("rfid_skipped", "rFID"), ("fid_skipped", "FID")):
        if results.get(key):
            parts.append(f"{name} skipped ({results[key]})")
    return "  ".join(parts)


def run_summary(workdir: str | os.PathLike, results: Mapping[str, Any] | None = None,
                python: str = "python") -> str:
    """A few lines: what ran, its latest eval numbers (or `results` of launch.evaluate), where
    its files are, and the commands a user runs next."""
    workdir = Path(workdir).resolve()
    config = {}
    if (workdir / "config.json").exists():
        config = json.loads((workdir / "config.json").read_text())
    trainer = config.get("trainer", "tokenizer")
    train, evaluation = last_rows(workdir)
    step = int((results or {}).get("step") or train.get("step") or evaluation.get("step") or 0)
    total = config.get("total_steps")
    ds = config.get("dataset", {})
    run = display_path(workdir)

    model = config.get("model", {})
    what = f"{model.get('name', trainer)} {model.get('size', '')}".strip()
    if trainer == "tokenizer" and config.get("quantizer"):
        what += f", {config['quantizer'].get('name')} quantizer"
    lines = [f"vqjax: {run} at step {step}" + (f" of {total}" if total else "")
             + f" ({what}, {ds.get('name', '?')} {ds.get('image_size', '?')} px)"]
    if total and step < total and not results:
        lines.append("  stopped before the end: rerun the same command to resume")
    if results:
        split = results.get("split") or ds.get("eval_split")
        lines.append(f"  evaluation ({results.get('examples', '?')} "
                     f"{'samples' if trainer == 'maskgit' else 'images'} of "
                     f"{results.get('dataset', ds.get('name'))}/{split}): {_metric_line(results)}")
    if evaluation:
        lines.append(f"  eval during training (step {evaluation['step']}, "
                     f"{int(evaluation.get('eval/examples', 0))} images): "
                     f"{_metric_line(evaluation, 'eval/')}")
    images = sorted((workdir / "images").glob("*.png")) if (workdir / "images").is_dir() else []
    if images:
        lines.append(f"  images:      {display_path(images[-1])}")
    lines.append(f"  checkpoints: {display_path(workdir / 'checkpoints')}")
    lines.append(f"  metrics:     {display_path(workdir / 'metrics.jsonl')}")
    lines.append(f"  tensorboard: tensorboard --logdir={display_path(workdir / 'tensorboard')}")
    lines.append("next:")
    if trainer == "tokenizer":
        lines.append(f"  {python} -m launch.evaluate --workdir={run}   # PSNR, SSIM, LPIPS, "
                     "usage, rFID")
        maskgit_dir = display_path(workdir.parent / f"maskgit_on_{workdir.name}")
        dataset = f",dataset={ds['name']}" if ds.get("name") else ""
        lines.append(f"  {python} -m launch.train --config=configs/maskgit.py:tiny{dataset} "
                     f"--workdir={maskgit_dir} --config.tokenizer_workdir={run}   # MaskGIT on "
                     "these tokens")
    else:
        lines.append(f"  {python} -m launch.sample --workdir={run} --out={run}/samples")
        lines.append(f"  {python} -m launch.evaluate --workdir={run}   # FID of samples")
    return "\n".join(lines)
