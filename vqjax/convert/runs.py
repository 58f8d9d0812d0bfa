"""A released checkpoint -> an ordinary vqjax run directory, for each source.

    from vqjax.train.config import load_config
    vqgan_presets = lambda arg: load_config("configs/vqgan.py", arg)
    convert_maskgit("converted/maskgit256", "tokenizer_imagenet256_checkpoint",
                    "maskgit_imagenet256_checkpoint", tokenizer_presets=vqgan_presets,
                    maskgit_presets=lambda arg: load_config("configs/maskgit.py", arg))
    convert_tokenizer("llamagen", "converted/llamagen", "vq_ds16_c2i.pt",
                      tokenizer_presets=vqgan_presets)

The library form of `python -m launch.convert` (which passes configs/'s presets: the library does
not import configs/). Each run is staged and renamed into place when complete; every check runs
before anything is written (`common.staging`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import ml_collections

from vqjax import inference
from vqjax.convert import common
from vqjax.convert import maskgit as maskgit_source
from vqjax.paths import resolve
from vqjax.train.tokenizer import build_tokenizer

# A preset's `get_config(arg)`: configs/vqgan.py's or configs/maskgit.py's.
ConfigGetter = Callable[[str], ml_collections.ConfigDict]


def size_from_name(path: str | None) -> int | None:
    """256 for '.../tokenizer_imagenet256_checkpoint' (the released files' names)."""
    match = re.search(r"imagenet(\d+)", Path(path).name) if path else None
    return int(match.group(1)) if match else None


def convert_maskgit(out: str, tokenizer_checkpoint: str | None = None,
                    transformer_checkpoint: str | None = None, *,
                    tokenizer_workdir: str | None = None, image_size: int | None = None,
                    num_classes: int = 1000, dataset: str = "imagenet2012", data_dir: str = "",
                    overwrite: bool = False, tokenizer_presets: ConfigGetter,
                    maskgit_presets: ConfigGetter) -> dict[str, Path]:
    """google-research/maskgit's released files -> `out/tokenizer`, `out/maskgit`; the paths.
    `tokenizer_presets` and `maskgit_presets` are configs/vqgan.py's and configs/maskgit.py's
    `get_config` (the library does not import configs/: launch.convert passes them)."""
    if not tokenizer_checkpoint and not transformer_checkpoint:
        raise ValueError("--from=maskgit needs --tokenizer_checkpoint and/or "
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
            base = tokenizer_presets(f"maskgit_released,res={tokenizer_size or 256}")
            base.dataset.name, base.dataset.data_dir = dataset, data_dir
            tok_config, variables = maskgit_source.tokenizer_from_checkpoint(
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
            base = maskgit_presets("released,res=256")
            base.dataset.name, base.dataset.data_dir = dataset, data_dir
            mg_config, params = maskgit_source.transformer_from_checkpoint(
                transformer_checkpoint, base, tokenizer.model, tokenizer_workdir,
                num_classes=num_classes, image_size=tokenizer_size)
            if mg_config.dataset.image_size == 512:  # the released 512 px decoding steps
                mg_config.sample.num_steps = maskgit_presets(
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
                      overwrite: bool = False, tokenizer_presets: ConfigGetter) -> dict[str, Path]:
    """A released tokenizer -> `out/tokenizer` with `vqjax.convert.<name>.convert(path,
    tokenizer_presets)` (taming, llamagen: configs/vqgan.py's `get_config`)."""
    if not checkpoint:
        raise ValueError(f"--from={name} needs --checkpoint=FILE")
    source = importlib.import_module(f"vqjax.convert.{name}")
    out_dir = Path(resolve(out))
    with common.staging(overwrite) as stage:
        stage.check_target(out_dir / "tokenizer")
        config, variables = source.convert(checkpoint, tokenizer_presets)
        if dataset:
            config.dataset.name = dataset
        if data_dir:
            config.dataset.data_dir = data_dir
        path = Path(checkpoint).expanduser()
        info = {"from": name, "checkpoint": str(path.absolute()), "sha256": common.sha256(path)}
        written = common.write_tokenizer_run(config, variables, out_dir / "tokenizer", info, stage)
    return {"tokenizer": written}
