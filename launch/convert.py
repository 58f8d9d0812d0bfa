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

The source is a module of `vqjax.convert` named in `CONVERTERS`; this file only parses flags.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

from absl import app, flags
from absl import logging as absl_logging


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


log = logging.getLogger("launch.convert")


def size_from_name(path: str | None) -> int | None:
    """256 for '.../tokenizer_imagenet256_checkpoint' (the released files' names)."""
    match = re.search(r"imagenet(\d+)", Path(path).name) if path else None
    return int(match.group(1)) if match else None


def convert_maskgit(out: str, tokenizer_checkpoint: str | None = None,
                    transformer_checkpoint: str | None = None, *,
                    tokenizer_workdir: str | None = None, image_size: int | None = None,
                    num_classes: int = 1000, dataset: str = "imagenet2012", data_dir: str = "",
                    overwrite: bool = False) -> dict[str, Path]:
    """google-research/maskgit's released files -> `out/tokenizer`, `out/maskgit`; the paths."""
    from configs import maskgit as maskgit_configs
    from configs import vqgan as vqgan_configs
    from vqjax import inference
    from vqjax.convert import common
    from vqjax.convert import maskgit as source
    from vqjax.paths import resolve
    from vqjax.train.tokenizer import build_tokenizer

    if not tokenizer_checkpoint and not transformer_checkpoint:
        raise app.UsageError("--from=maskgit needs --tokenizer_checkpoint and/or "
                             "--transformer_checkpoint")
    out_dir = Path(resolve(out))
    written: dict[str, Path] = {}
    with common.staging(overwrite) as stage:
        tokenizer_out = out_dir / "tokenizer"
        tokenizer = None
        tokenizer_size = None
        if tokenizer_checkpoint:
            stage.check_target(tokenizer_out)
            tokenizer_size = image_size or size_from_name(tokenizer_checkpoint)
        if transformer_checkpoint:
            stage.check_target(out_dir / "maskgit")
        if tokenizer_checkpoint:
            base = vqgan_configs.get_config(f"maskgit_released,res={tokenizer_size or 256}")
            base.dataset.name, base.dataset.data_dir = dataset, data_dir
            tok_config, variables = source.tokenizer_from_checkpoint(
                tokenizer_checkpoint, base, image_size=tokenizer_size or 256)
            tokenizer = SimpleNamespace(model=build_tokenizer(tok_config), config=tok_config)
            tokenizer_workdir = str(tokenizer_out)
        elif transformer_checkpoint:
            tokenizer_workdir = resolve(tokenizer_workdir) or str(tokenizer_out)
            tokenizer = inference.load(tokenizer_workdir)
            if not isinstance(tokenizer, inference.Tokenizer):
                raise ValueError(f"--tokenizer_workdir={tokenizer_workdir} is not a tokenizer run")
            tokenizer_size = image_size or tokenizer.image_size
        if transformer_checkpoint:
            base = maskgit_configs.get_config("released,res=256")
            base.dataset.name, base.dataset.data_dir = dataset, data_dir
            mg_config, params = source.transformer_from_checkpoint(
                transformer_checkpoint, base, tokenizer.model, tokenizer_workdir,
                num_classes=num_classes, image_size=tokenizer_size)
            if mg_config.dataset.image_size == 512:  # the released 512 px decoding steps
                mg_config.sample.num_steps = maskgit_configs.get_config(
                    "released,res=512").sample.num_steps
            if tokenizer_size is None and tokenizer_checkpoint:  # size from the transformer
                tok_config.dataset.image_size = mg_config.dataset.image_size
        # Everything checked: write.
        if tokenizer_checkpoint:
            source_info = {"from": "maskgit", "checkpoint": str(Path(tokenizer_checkpoint)
                                                                .expanduser().absolute()),
                           "sha256": common.sha256(Path(tokenizer_checkpoint).expanduser())}
            written["tokenizer"] = common.write_tokenizer_run(
                tok_config, variables, tokenizer_out, source_info, stage)
        if transformer_checkpoint:
            source_info = {"from": "maskgit", "checkpoint": str(Path(transformer_checkpoint)
                                                                .expanduser().absolute()),
                           "sha256": common.sha256(Path(transformer_checkpoint).expanduser())}
            written["maskgit"] = common.write_maskgit_run(
                mg_config, params, out_dir / "maskgit", tokenizer, source_info, stage)
    return written


def convert_tokenizer(name: str, out: str, checkpoint: str | None, *,
                      dataset: str | None = None, data_dir: str = "",
                      overwrite: bool = False) -> dict[str, Path]:
    """A released tokenizer -> `out/tokenizer` with `vqjax.convert.<name>.convert(path,
    get_config)` (taming, llamagen: configs/vqgan.py's presets)."""
    import importlib

    from configs import vqgan as vqgan_configs
    from vqjax.convert import common
    from vqjax.paths import resolve

    if not checkpoint:
        raise app.UsageError(f"--from={name} needs --checkpoint=FILE")
    source = importlib.import_module(f"vqjax.convert.{name}")
    out_dir = Path(resolve(out))
    with common.staging(overwrite) as stage:
        stage.check_target(out_dir / "tokenizer")
        config, variables = source.convert(checkpoint, vqgan_configs.get_config)
        if dataset:
            config.dataset.name = dataset
        if data_dir:
            config.dataset.data_dir = data_dir
        path = Path(checkpoint).expanduser()
        info = {"from": name, "checkpoint": str(path.absolute()), "sha256": common.sha256(path)}
        written = common.write_tokenizer_run(config, variables, out_dir / "tokenizer", info, stage)
    return {"tokenizer": written}


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
    from vqjax.convert import ConversionError
    from vqjax.convert.torch_checkpoint import CheckpointError

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
