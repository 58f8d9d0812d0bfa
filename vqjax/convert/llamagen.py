"""LlamaGen's released VQ tokenizer -> a vqjax `taming_vqgan` tokenizer (config + variables).

    config, variables = vqjax.convert.llamagen.convert("vq_ds16_c2i.pt")
    model = vqjax.train.tokenizer.build_tokenizer(config)

Input: a `.pt` saved by LlamaGen's `tokenizer/tokenizer_image/vq_train.py` (FoundationVision/
LlamaGen; the released `vq_ds16_c2i.pt` is VQ-16: 16384 l2-normalised 8-d codes, f16, rFID 2.19
on ImageNet val at 256 px). Its state dict is taken from "ema", else "model", else "state_dict",
as LlamaGen's own loaders do. The network is taming's (see vqjax/models/taming_vqgan.py) under
other names: encoder.conv_blocks.{level}.res.{j} / .attn.{j} / .downsample.conv, encoder.mid.{0,1,2}
(ResnetBlock, AttnBlock, ResnetBlock), decoder.conv_blocks.{k} with k counted from the lowest
resolution (k = levels - 1 - level), quant_conv to the 8-d code space, quantize.embedding.weight
(normalised at use, so stored as is). quantize.codebook_used (a training-time usage log) is skipped.

Sizes are read from the state dict, the config is `configs/vqgan.py:llamagen_vq16` with them set,
and missing/unexpected keys or wrong shapes raise `CheckpointError` naming the key and the expected
shape, as in `vqjax.convert.taming`.
"""

from __future__ import annotations

import re

from typing import Callable

import ml_collections

from vqjax.convert import taming, torch_checkpoint

SOURCE = "llamagen"
CONFIG_PRESET = "llamagen_vq16"
CONTAINERS = ("ema", "model", "state_dict")
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_MID = {"mid_block_1": "mid.0", "mid_attn_1": "mid.1", "mid_block_2": "mid.2"}


def _module_key(module: str, num_levels: int) -> str:
    """A TamingEncoder/TamingDecoder sub-module name -> LlamaGen's module path."""
    if module in _MID:
        return _MID[module]
    if m := re.fullmatch(r"(down|up)_(\d+)_(block|attn)_(\d+)", module):
        level = int(m[2]) if m[1] == "down" else num_levels - 1 - int(m[2])
        return f"conv_blocks.{level}.{'res' if m[3] == 'block' else 'attn'}.{m[4]}"
    if m := re.fullmatch(r"down_(\d+)_downsample", module):
        return f"conv_blocks.{m[1]}.downsample.conv"
    if m := re.fullmatch(r"up_(\d+)_upsample", module):
        return f"conv_blocks.{num_levels - 1 - int(m[1])}.upsample.conv"
    return module  # conv_in, norm_out, conv_out


def torch_key_for(num_levels: int):
    """path -> LlamaGen state-dict key, for a network of `num_levels` levels."""

    def torch_key(path: tuple[str, ...]) -> str:
        if path == ("quantize", "quantizer", "codebook"):
            return "quantize.embedding.weight"
        *modules, leaf = path
        if modules[0] in ("encoder", "decoder"):
            modules = [modules[0], _module_key(modules[1], num_levels), *modules[2:]]
        return ".".join([*modules, _LEAF[leaf]])

    return torch_key


def is_training_only(key: str) -> bool:
    return key == "quantize.codebook_used"


def convert(path, get_config: Callable[[str], ml_collections.ConfigDict]
            ) -> tuple[ml_collections.ConfigDict, dict]:
    """(tokenizer-trainer config, Flax variables) of the LlamaGen VQ checkpoint at `path`;
    `get_config`: `configs/vqgan.py`'s (`launch.convert` passes it)."""
    from vqjax.train.tokenizer import build_tokenizer  # noqa: PLC0415

    state_dict = torch_checkpoint.load_state_dict(path, CONTAINERS, SOURCE)
    arch = taming.infer_architecture(
        state_dict,
        blocks=lambda level: f"encoder.conv_blocks.{level}.res.",
        attentions=lambda level: f"encoder.conv_blocks.{level}.attn.",
        source=SOURCE,
    )
    config = taming.make_config(get_config, CONFIG_PRESET, arch)
    model = build_tokenizer(config)
    torch_key = torch_key_for(len(arch["channel_multipliers"]))
    variables = taming.build_variables(model, state_dict, torch_key, is_training_only, SOURCE)
    return config, variables
