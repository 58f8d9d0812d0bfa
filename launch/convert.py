r"""Convert released checkpoints into ordinary vqjax runs.

    python -m launch.convert --from=maskgit \
        --tokenizer_checkpoint=checkpoints/tokenizer_imagenet256_checkpoint \
        --transformer_checkpoint=checkpoints/maskgit_imagenet256_checkpoint \
        --out=converted/maskgit256
    python -m launch.sample --workdir=converted/maskgit256/maskgit --out=samples --labels=1,90
    python -m launch.evaluate --workdir=converted/maskgit256/tokenizer \
        --data_dir=~/tensorflow_datasets --num_examples=50000   # rFID etc.: docs/pretrained.md

    python -m launch.convert --from=taming --checkpoint=vqgan_imagenet_f16_1024/ckpts/last.ckpt \
        --out=converted/taming_f16_1024                          # -> .../tokenizer
    python -m launch.convert --from=llamagen --checkpoint=vq_ds16_c2i.pt --out=converted/llamagen

`--out=DIR` gets `DIR/tokenizer` and `DIR/maskgit` (either flag alone converts that half; the
transformer alone needs a tokenizer run: `DIR/tokenizer` from an earlier conversion, or
--tokenizer_workdir). Each run is staged in a temporary directory and renamed into place when
complete; every check (keys, shapes, the transformer's vocabulary and grid against the tokenizer)
runs before anything is written, and existing runs are kept unless --overwrite.

The source is a module of `vqjax.convert` named in `CONVERTERS`; this file only parses flags and
passes configs/'s presets to `vqjax.convert.runs`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from absl import app, flags
from absl import logging as absl_logging

from configs import maskgit as maskgit_configs
from configs import vqgan as vqgan_configs
from vqjax.convert import ConversionError, runs
from vqjax.convert.runs import size_from_name  # noqa: F401 (public)
from vqjax.convert.torch_checkpoint import CheckpointError


def define_flags() -> None:
    """The command line (defined when run as a script, so the module imports cleanly next to other
    entry points)."""
    flags.DEFINE_string("from", None, "The source: one of CONVERTERS (maskgit, taming, "
                        "llamagen).", required=True)
    flags.DEFINE_string("checkpoint", None, "taming, llamagen: the released tokenizer file "
                        "(taming: the Lightning last.ckpt; LlamaGen: vq_ds16_c2i.pt).")
    flags.DEFINE_string("out", None, "Output directory: DIR/tokenizer, DIR/maskgit.",
                        required=True)
    flags.DEFINE_string("tokenizer_checkpoint", None, "maskgit: the released tokenizer file.")
    flags.DEFINE_string("transformer_checkpoint", None, "maskgit: the released transformer file.")
    flags.DEFINE_string("tokenizer_workdir", None, "maskgit: the tokenizer run for a transformer "
                        "converted alone (default: DIR/tokenizer).")
    flags.DEFINE_integer("image_size", None, "maskgit: resolution (default: from the "
                         "transformer's token grid, else from 'imagenet<N>' in the tokenizer's "
                         "file name, else 256).")
    flags.DEFINE_integer("num_classes", 1000, "maskgit: class tokens in the transformer's "
                         "vocabulary (ImageNet: 1000).")
    flags.DEFINE_string("dataset", "imagenet2012", "tfds name the runs evaluate and fine-tune on "
                        "(their config.dataset.name).")
    flags.DEFINE_string("data_dir", "", "tfds data_dir of the runs' configs.")
    flags.DEFINE_bool("overwrite", False, "Replace existing runs in --out.")


def convert_maskgit(out: str, tokenizer_checkpoint: str | None = None,
                    transformer_checkpoint: str | None = None, **options) -> dict[str, Path]:
    """`vqjax.convert.runs.convert_maskgit` with configs/'s presets."""
    if not tokenizer_checkpoint and not transformer_checkpoint:
        raise app.UsageError("--from=maskgit needs --tokenizer_checkpoint and/or "
                             "--transformer_checkpoint")
    return runs.convert_maskgit(out, tokenizer_checkpoint, transformer_checkpoint,
                                tokenizer_presets=vqgan_configs.get_config,
                                maskgit_presets=maskgit_configs.get_config, **options)


def convert_tokenizer(name: str, out: str, checkpoint: str | None, **options) -> dict[str, Path]:
    """`vqjax.convert.runs.convert_tokenizer` with configs/vqgan.py's presets."""
    if not checkpoint:
        raise app.UsageError(f"--from={name} needs --checkpoint=FILE")
    return runs.convert_tokenizer(name, out, checkpoint,
                                  tokenizer_presets=vqgan_configs.get_config, **options)


# --from=NAME -> the function converting NAME's files from the parsed flags.
CONVERTERS = {
    "maskgit": lambda f: convert_maskgit(
        f.out, f.tokenizer_checkpoint, f.transformer_checkpoint,
        tokenizer_workdir=f.tokenizer_workdir, image_size=f.image_size,
        num_classes=f.num_classes, dataset=f.dataset, data_dir=f.data_dir,
        overwrite=f.overwrite),
    "taming": lambda f: convert_tokenizer("taming", f.out, f.checkpoint, dataset=f.dataset,
                                          data_dir=f.data_dir, overwrite=f.overwrite),
    "llamagen": lambda f: convert_tokenizer("llamagen", f.out, f.checkpoint, dataset=f.dataset,
                                            data_dir=f.data_dir, overwrite=f.overwrite),
}


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)
    name = flags.FLAGS["from"].value
    if name not in CONVERTERS:
        raise app.UsageError(f"--from={name!r}; choose one of {', '.join(CONVERTERS)}")
    try:
        written = CONVERTERS[name](flags.FLAGS)
    except (ConversionError, CheckpointError, FileExistsError, FileNotFoundError) as e:
        print(f"launch.convert: {e}", file=sys.stderr)
        sys.exit(1)
    for kind, path in written.items():
        print(f"wrote {kind} run {path}")
    print(json.dumps({k: str(v) for k, v in written.items()}))


if __name__ == "__main__":
    define_flags()
    app.run(main)
