r"""Sample images from a trained MaskGIT run with parallel decoding.

    python -m launch.sample --workdir=/tmp/maskgit_digits --out=/tmp/samples \
        --labels=0,1,2 --num_per_label=8 --steps=8 --temperature=1 --guidance_scale=2 --seed=0

Restores the MaskGIT checkpoint (latest, or --step) with `vqjax.load` (EMA params) and, through
the `tokenizer_workdir` of its config, the tokenizer, onto this process's local devices. For each label writes
`<out>/label_<L>.png` (a grid of --num_per_label images) and `<out>/label_<L>_tokens.npy` (int32
[N, h, w(, Q)]); an unconditional model samples `<out>/unconditional.png`. Prints images/s (decode
and tokenizer decoding, after compilation). Options left unset take the run's `config.sample`: a
MaskGIT converted by `launch.convert --from=maskgit` samples with the released decoding settings
(cosine schedule, choice temperature 4.5, 8 steps at 256 px, 16 at 512 px).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

_WORKDIR = flags.DEFINE_string("workdir", None, "A MaskGIT run's workdir.")
_OUT = flags.DEFINE_string("out", None, "Where the PNG grids and token arrays go.")
_LABELS = flags.DEFINE_string("labels", "", "Comma-separated class labels (default: 0..9 or all "
                              "classes if fewer).")
_NUM = flags.DEFINE_integer("num_per_label", 8, "Images per label.")
_STEPS = flags.DEFINE_integer("steps", None, "Decoding steps (default: config.sample.num_steps).")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Token sampling temperature.")
_CHOICE_TEMPERATURE = flags.DEFINE_float("choice_temperature", None, "Confidence noise scale.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance (0: none).")
_GUIDANCE_BASE = flags.DEFINE_enum("guidance_base", None, ["uncond", "cond"],
                                   "uncond: uncond + s (cond - uncond); cond: MaskBit's "
                                   "cond + s (cond - uncond) (default: config.sample).")
_GUIDANCE_ANNEAL = flags.DEFINE_string("guidance_anneal", None, "none, linear or cosine<p> "
                                       "(MaskBit's power-cosine) (default: config.sample).")
_TOP_K = flags.DEFINE_integer("top_k", None, "Top-k filter (0: off).")
_TOP_P = flags.DEFINE_float("top_p", None, "Top-p filter (0: off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir", "out"])


def sample(workdir: str, out: str, labels: list[int] | None = None, num_per_label: int = 8,
           seed: int = 0, step: int | None = None, **options) -> dict:
    """Library form of the CLI; returns {"images_per_s", "files", "step"}."""
    import jax
    import numpy as np

    import vqjax
    from vqjax.inference import MaskGIT
    from vqjax.paths import resolve
    from vqjax.train import metrics_writer

    if num_per_label < 1:
        raise ValueError(f"--num_per_label={num_per_label} must be >= 1")
    if options.get("num_steps") is not None and options["num_steps"] < 1:
        raise ValueError(f"--steps={options['num_steps']} must be >= 1 (decoding steps)")
    workdir, out = resolve(workdir), resolve(out)
    run = vqjax.load(workdir, step)
    if not isinstance(run, MaskGIT):
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


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    labels = [int(x) for x in _LABELS.value.split(",") if x.strip()] or None
    sample(_WORKDIR.value, _OUT.value, labels, _NUM.value, _SEED.value, _STEP.value,
           num_steps=_STEPS.value, temperature=_TEMPERATURE.value,
           choice_temperature=_CHOICE_TEMPERATURE.value, guidance_scale=_GUIDANCE.value,
           guidance_base=_GUIDANCE_BASE.value, guidance_anneal=_GUIDANCE_ANNEAL.value,
           top_k=_TOP_K.value, top_p=_TOP_P.value)


if __name__ == "__main__":
    app.run(main)
