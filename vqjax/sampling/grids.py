"""Sampling a MaskGIT run to files: one PNG grid and one token array per class label.

    from vqjax.sampling.grids import sample_grids
    sample_grids("runs/maskgit_tiny", "samples", labels=[1, 7], num_per_label=8, num_steps=8)

The library form of `python -m launch.sample` (see that file for the command line): the run is
restored with `vqjax.load` (EMA params, its tokenizer through `tokenizer_workdir`) onto this
process's local devices; options left None take the run's `config.sample`.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from vqjax import inference
from vqjax.paths import resolve
from vqjax.train import metrics_writer


def sample_grids(workdir: str, out: str, labels: list[int] | None = None, num_per_label: int = 8,
           seed: int = 0, step: int | None = None, **options) -> dict:
    """Samples `num_per_label` images of each label (default: 0..9, or all classes if fewer;
    an unconditional model: one group) from MaskGIT run `workdir` (checkpoint `step`, default the
    latest) and writes `<out>/<group>.png` and `<out>/<group>_tokens.npy`; prints images/s and
    returns {"images_per_s", "files", "step"}. `options`: decoding options of
    `vqjax.inference.MaskGIT.sample` (None: the run's config.sample)."""
    if num_per_label < 1:
        raise ValueError(f"--num_per_label={num_per_label} must be >= 1")
    if options.get("num_steps") is not None and options["num_steps"] < 1:
        raise ValueError(f"--steps={options['num_steps']} must be >= 1 (decoding steps)")
    workdir, out = resolve(workdir), resolve(out)
    run = inference.load(workdir, step)
    if not isinstance(run, inference.MaskGIT):
        raise ValueError(f"{workdir!r} is a {run.config.get('trainer', 'tokenizer')!r} run, not a "
                         "MaskGIT run: launch.sample samples MaskGIT runs")
    ckpt_step = run.step
    num_classes = run.num_classes
    if num_classes is None:
        groups = [("unconditional", None)]
    else:
        labels = list(range(min(num_classes, 10))) if not labels else labels
        bad = [label for label in labels if not 0 <= label < num_classes]
        if bad:
            raise ValueError(f"labels {bad} outside [0, {num_classes})")
        groups = [(f"label_{label}", label) for label in labels]

    # Pad the batch to a multiple of the device count (extra samples are dropped).
    batch = -(-num_per_label // run.mesh.size) * run.mesh.size

    def sample_fn(rng, label_array):
        return run.sample(None if label is None else label_array, rng, batch_size=batch,
                          return_tokens=True, **options)

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, timed_images, timed_seconds = [], 0, 0.0
    for i, (name, label) in enumerate(groups):
        label_array = np.full((batch,), 0 if label is None else label, np.int32)
        rng = jax.random.fold_in(jax.random.key(seed), i)
        if i == 0:  # compile outside the timing
            jax.block_until_ready(sample_fn(rng, label_array))
        start = time.perf_counter()
        tokens, images = jax.device_get(sample_fn(rng, label_array))  # batch-sharded: all rows
        timed_seconds += time.perf_counter() - start
        timed_images += batch
        tokens, images = tokens[:num_per_label], images[:num_per_label]
        png = out_dir / f"{name}.png"
        what = "unconditional" if label is None else f"class {label}"
        metrics_writer.save_png(png, metrics_writer.figure(
            metrics_writer.image_grid(images),
            f"{num_per_label} samples, {what}: {Path(workdir).name} step {ckpt_step}"))
        npy = out_dir / f"{name}_tokens.npy"
        np.save(npy, np.asarray(tokens, np.int32))
        files += [png, npy]
    images_per_s = timed_images / max(timed_seconds, 1e-9)
    print(f"sampled {len(groups)} x {num_per_label} images from {workdir} step {ckpt_step}: "
          f"{images_per_s:.1f} images/s -> {out_dir}")
    return {"images_per_s": images_per_s, "files": files, "step": ckpt_step}
