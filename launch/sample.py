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

In Python: `vqjax.sampling.grids.sample_grids(workdir, out, labels, ...)`.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging

from vqjax.sampling.grids import sample_grids

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


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    labels = [int(x) for x in _LABELS.value.split(",") if x.strip()] or None
    sample_grids(_WORKDIR.value, _OUT.value, labels, _NUM.value, _SEED.value, _STEP.value,
           num_steps=_STEPS.value, temperature=_TEMPERATURE.value,
           choice_temperature=_CHOICE_TEMPERATURE.value, guidance_scale=_GUIDANCE.value,
           guidance_base=_GUIDANCE_BASE.value, guidance_anneal=_GUIDANCE_ANNEAL.value,
           top_k=_TOP_K.value, top_p=_TOP_P.value)


if __name__ == "__main__":
    app.run(main)
