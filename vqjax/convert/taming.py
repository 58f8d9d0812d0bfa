"""taming-transformers' released VQGANs -> a vqjax `taming_vqgan` tokenizer (config + variables).

    config, variables = vqjax.convert.taming.convert("vqgan_imagenet_f16_1024/ckpts/last.ckpt")
    model = vqjax.train.tokenizer.build_tokenizer(config)
    indices = model.apply(variables, images, method=model.encode)[1]   # images in [-1, 1]

Input: a Lightning `.ckpt` of `taming.models.vqgan.VQModel` (vqgan_imagenet_f16_1024,
vqgan_imagenet_f16_16384, or any VQModel with the same layers): `checkpoint["state_dict"]` holds
encoder.*, decoder.*, quant_conv.*, post_quant_conv.* and quantize.embedding.weight, plus the
training loss's loss.* (LPIPS, discriminator), which are not part of the tokenizer and are skipped.

Every size is read from the state dict (widths, levels, res blocks per level, which levels have
attention, z_channels, code width, codebook size), so the released models and small test networks
go through the same path. The config is `configs/vqgan.py:taming_f16_1024` (`taming_f16_16384`
for 16384 codes) with those fields set, `compute_dtype="float32"` and `model.precision="highest"`
(JAX's default computes float32 convs with TF32 on GPUs and bf16 passes on TPUs, which is not
within 1e-4; pass `--config.model.precision=` to fine-tune at full speed): a complete
tokenizer-trainer config. Every
parameter of the network is matched to one tensor, and every tensor to a parameter: a missing or
unexpected key, or a wrong shape, raises `CheckpointError` (a ValueError) naming the key and the
expected shape. Reading the file needs torch (see `torch_checkpoint`). The caller passes the presets'
`get_config` (configs/vqgan.py's): the library never imports configs/.
"""

from __future__ import annotations

import re

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vqjax.convert import torch_checkpoint
from vqjax.convert.torch_checkpoint import CheckpointError, require
from vqjax.quantizers.linen import QUANTIZER_STATE

SOURCE = "taming"


def config_preset(codebook_size: int) -> str:
    """The configs/vqgan.py variant a checkpoint starts from (its sizes are then overwritten)."""
    return "taming_f16_16384" if codebook_size == 16384 else "taming_f16_1024"


# -- architecture from the state dict ----------------------------------------------------------
def _indices(state_dict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (one group) over the state dict's keys."""
    found = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return sorted(found)


def _consecutive(found: list[int], what: str, source: str, example: str) -> int:
    """len(found), checking they are 0..n-1 (a gap means missing keys)."""
    if not found:
        raise CheckpointError(f"{source}: no {what} in the state dict (no key like {example!r})")
    for expected, index in enumerate(found):
        if index != expected:
            raise CheckpointError(
                f"{source}: {what} {expected} is missing (found {found}; keys like {example!r})"
            )
    return len(found)


def infer_architecture(state_dict, *, blocks, attentions, source: str = SOURCE,
                       codebook_key: str = "quantize.embedding.weight") -> dict:
    """Model fields of `TamingVQGAN` read from the state dict's shapes.

    `blocks(level)` / `attentions(level)` give the key prefix of the encoder's ResnetBlocks /
    AttnBlocks at a level (taming: "encoder.down.{level}.block."), so LlamaGen reuses this.
    """
    filters = require(state_dict, "encoder.conv_in.weight", source, 4, "the first conv")
    filters = int(filters.shape[0])
    level_prefix = re.escape(blocks(0)).replace("0", r"(\d+)", 1)
    num_levels = _consecutive(_indices(state_dict, level_prefix), "encoder level", source,
                              blocks(0) + "0.conv1.weight")
    num_res_blocks = _consecutive(
        _indices(state_dict, re.escape(blocks(0)) + r"(\d+)\."), "encoder res block of level 0",
        source, blocks(0) + "0.conv1.weight")
    multipliers, attention_levels = [], []
    for level in range(num_levels):
        width = require(state_dict, f"{blocks(level)}0.conv1.weight", source, 4).shape[0]
        if width % filters:
            raise CheckpointError(
                f"{source}: {blocks(level)}0.conv1.weight has {width} output channels, not a "
                f"multiple of the {filters} channels of encoder.conv_in.weight"
            )
        multipliers.append(width // filters)
        if f"{attentions(level)}0.q.weight" in state_dict:
            attention_levels.append(level)
    z_channels = int(require(state_dict, "encoder.conv_out.weight", source, 4).shape[0])
    embedding_dim = int(require(state_dict, "quant_conv.weight", source, 4,
                                "the 1x1 conv to the code width").shape[0])
    codebook = require(state_dict, codebook_key, source, 2, "the codebook [codes, dim]")
    channels = int(state_dict["encoder.conv_in.weight"].shape[1])
    if channels != 3:
        raise CheckpointError(
            f"{source}: encoder.conv_in.weight takes {channels} input channels; vqjax tokenizers "
            "take RGB images (expected shape (filters, 3, 3, 3))"
        )
    return dict(
        filters=filters,
        channel_multipliers=tuple(multipliers),
        num_res_blocks=num_res_blocks,
        attention_levels=tuple(attention_levels),
        z_channels=z_channels,
        embedding_dim=embedding_dim,
        codebook_size=int(codebook.shape[0]),
    )


def make_config(get_config: Callable[[str], ml_collections.ConfigDict], preset: str,
                arch: dict) -> ml_collections.ConfigDict:
    """`get_config(preset)` (e.g. `configs/vqgan.py`'s, which the caller passes: the library never
    imports configs/) with the inferred architecture filled in."""
    config = get_config(preset)
    m = config.model
    m.filters = arch["filters"]
    m.channel_multipliers = arch["channel_multipliers"]
    m.num_res_blocks = arch["num_res_blocks"]
    m.attention_levels = arch["attention_levels"]
    m.z_channels = arch["z_channels"]
    m.embedding_dim = arch["embedding_dim"]
    config.quantizer.name = "vq"
    config.quantizer.vq.codebook_size = arch["codebook_size"]
    config.compute_dtype = "float32"
    config.model.precision = "highest"  # float32 convs on GPUs/TPUs too (else TF32 / bf16 passes)
    return config


def abstract_variables(model):
    """ShapeDtypeStructs of the model's variables (nothing is computed)."""
    factor = model.downsampling_factor
    dummy = jax.ShapeDtypeStruct((1, factor, factor, model.channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), dummy)


def build_variables(model, state_dict, torch_key, ignored, source: str) -> dict:
    """{"params": the state dict's tensors in the model's tree, QUANTIZER_STATE: a fresh state}."""
    abstract = abstract_variables(model)
    params = torch_checkpoint.fill_tree(abstract["params"], torch_key, state_dict, source, ignored)
    # The quantizer's state as at init (usage counts, a zero codebook offset), not random.
    quantizer = model.built_quantizer()
    state = quantizer.init(jax.random.key(0), jnp.zeros((1, model.latent_channels)))["state"]
    expected = abstract.get(QUANTIZER_STATE, {}).get("quantize", {}).get("quantizer")
    if jax.tree.structure(expected) != jax.tree.structure(state):
        raise AssertionError("quantizer state does not match the model's")  # a vqjax bug
    variables = {"params": params, QUANTIZER_STATE: {"quantize": {"quantizer": state}}}
    return jax.tree.map(np.asarray, variables)


# -- the key mapping ---------------------------------------------------------------------------
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}


def _module_key(module: str) -> str:
    """A TamingEncoder/TamingDecoder sub-module name -> taming's module path."""
    if m := re.fullmatch(r"(down|up)_(\d+)_(block|attn)_(\d+)", module):
        return f"{m[1]}.{m[2]}.{m[3]}.{m[4]}"
    if m := re.fullmatch(r"down_(\d+)_downsample", module):
        return f"down.{m[1]}.downsample.conv"
    if m := re.fullmatch(r"up_(\d+)_upsample", module):
        return f"up.{m[1]}.upsample.conv"
    if m := re.fullmatch(r"mid_(block|attn)_(\d)", module):
        return f"mid.{m[1]}_{m[2]}"
    return module  # conv_in, norm_out, conv_out


def torch_key(path: tuple[str, ...]) -> str:
    """The taming state-dict key of a Flax parameter path of `TamingVQGAN`."""
    if path == ("quantize", "quantizer", "codebook"):
        return "quantize.embedding.weight"
    *modules, leaf = path
    if modules[0] in ("encoder", "decoder"):
        modules = [modules[0], _module_key(modules[1]), *modules[2:]]
    return ".".join([*modules, _LEAF[leaf]])


def is_training_only(key: str) -> bool:
    """Tensors of VQModel's training loss (LPIPS, discriminator), not of the tokenizer."""
    return key.startswith("loss.")


# -- the converter -----------------------------------------------------------------------------
def convert(path, get_config: Callable[[str], ml_collections.ConfigDict]
            ) -> tuple[ml_collections.ConfigDict, dict]:
    """(tokenizer-trainer config, Flax variables) of the taming VQGAN checkpoint at `path`;
    `get_config`: `configs/vqgan.py`'s (`launch.convert` passes it)."""
    from vqjax.train.tokenizer import build_tokenizer  # noqa: PLC0415

    state_dict = torch_checkpoint.load_state_dict(path, ("state_dict",), SOURCE)
    arch = infer_architecture(
        state_dict,
        blocks=lambda level: f"encoder.down.{level}.block.",
        attentions=lambda level: f"encoder.down.{level}.attn.",
    )
    config = make_config(get_config, config_preset(arch["codebook_size"]), arch)
    model = build_tokenizer(config)
    variables = build_variables(model, state_dict, torch_key, is_training_only, SOURCE)
    return config, variables
