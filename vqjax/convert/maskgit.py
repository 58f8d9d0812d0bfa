"""google-research/maskgit's released checkpoints -> vqjax runs, exactly.

The released files (`tokenizer_imagenet{256,512}_checkpoint`, `maskgit_imagenet{256,512}_checkpoint`)
are `flax.serialization.to_bytes(variables)` of `maskgit/nets/vqgan_tokenizer.py:VQVAE` and
`maskgit/nets/maskgit_transformer.py:Transformer`, built with
`maskgit/configs/maskgit_class_cond_config.py`. Their networks are vqjax models:

- tokenizer: `vqgan.VQGAN` with `shortcut="output"` and `pixel_range="unit"` (preset
  "maskgit_released"). Its encoder and decoder trees carry the released names already (Flax's
  automatic names in the released order); the codebook `quantizer/codebook` [K, D] becomes the vq
  quantizer's codebook (a param with `ema_update=False`, else its EMA state).
- transformer: `maskgit.MaskGIT(architecture="bert")`, renamed key by key (`_transformer_key`):
  `Embed_0/word_embeddings` -> `word_embedding`, `Embed_0/position_embeddings` ->
  `position_embedding`, `Embed_0/embeddings_ln` -> `ln_embedding`, `TransformerLayer_i/
  Attention_0/self_attention` -> `block_ii/attention`, `.../attention_output_ln` ->
  `block_ii/ln_attention`, `Mlp_0/intermediate_output|layer_output|layer_output_ln` ->
  `block_ii/wi|wo|ln_feed_forward`, `MlmLayer_0/mlm_dense|mlm_ln|mlm_bias` ->
  `head_hidden|head_ln|head_output_bias`. The released vocabulary (codes, 1000 class tokens,
  the mask as the last row, id -1) is the bert architecture's.

Sizes are inferred from the tree (filters, res blocks, channel multipliers, embedding dim,
codebook size; layers, width, heads, MLP width, token grid), then every key and shape is checked
against the vqjax model built from them: a missing, unexpected or misshapen key is an error naming
it and the expected shape.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vqjax.convert.common import (ConversionError, check_against, flatten, get,
                                  read_flax_msgpack, unflatten)

NAME = "maskgit"
RELEASED_NUM_CLASSES = 1000
GROUP_NORM_GROUPS = 32  # flax.linen.GroupNorm's default, what the released tokenizer uses
TOKENIZER = "MaskGIT tokenizer checkpoint"
TRANSFORMER = "MaskGIT transformer checkpoint"


def _count(flat, pattern: str) -> int:
    """How many distinct i match `pattern` (a regex with one group) at the start of a key."""
    found = {int(m.group(1)) for key in flat if (m := re.match(pattern, key))}
    if found and found != set(range(len(found))):
        raise ConversionError(f"non-contiguous module numbering for {pattern!r}: {sorted(found)}")
    return len(found)


# ------------------------------------------------------------------------------------------------
# The tokenizer
# ------------------------------------------------------------------------------------------------
def infer_tokenizer(flat: dict) -> dict:
    """Architecture of a released tokenizer's flat params: filters, num_res_blocks,
    channel_multipliers, embedding_dim, codebook_size."""
    conv_in = get(flat, "encoder/Conv_0/kernel", TOKENIZER, "(3, 3, 3, filters)")
    if conv_in.ndim != 4 or conv_in.shape[:3] != (3, 3, 3):
        raise ConversionError(f"{TOKENIZER}: key 'encoder/Conv_0/kernel' has shape "
                              f"{conv_in.shape}, expected (3, 3, 3, filters)")
    filters = int(conv_in.shape[-1])
    codebook = get(flat, "quantizer/codebook", TOKENIZER, "(codebook_size, embedding_dim)")
    if codebook.ndim != 2:
        raise ConversionError(f"{TOKENIZER}: key 'quantizer/codebook' has shape {codebook.shape}, "
                              "expected (codebook_size, embedding_dim)")
    decoder_convs = _count(flat, r"decoder/Conv_(\d+)/")
    levels = decoder_convs - 1  # conv_in, one conv per upsampling (levels - 1), conv_out
    encoder_blocks = _count(flat, r"encoder/ResBlock_(\d+)/")
    if levels < 1 or encoder_blocks % (levels + 1):
        raise ConversionError(f"{TOKENIZER}: {encoder_blocks} encoder ResBlocks and "
                              f"{decoder_convs} decoder convs fit no MaskGIT VQGAN (levels x "
                              "res blocks + res blocks in the encoder, levels + 1 decoder convs)")
    num_res_blocks = encoder_blocks // (levels + 1)
    multipliers = []
    for level in range(levels):
        key = f"encoder/ResBlock_{level * num_res_blocks}/Conv_1/kernel"
        channels = int(get(flat, key, TOKENIZER, "(3, 3, channels, channels)").shape[-1])
        if channels % filters:
            raise ConversionError(f"{TOKENIZER}: key {key!r} has {channels} output channels, not "
                                  f"a multiple of the {filters} filters")
        multipliers.append(channels // filters)
    return dict(filters=filters, num_res_blocks=num_res_blocks,
                channel_multipliers=tuple(multipliers), embedding_dim=int(codebook.shape[1]),
                codebook_size=int(codebook.shape[0]))


def tokenizer_config(base: ml_collections.ConfigDict, arch: dict,
                     image_size: int) -> ml_collections.ConfigDict:
    """`base` (configs/vqgan.py:maskgit_released) with the inferred sizes filled in."""
    config = ml_collections.ConfigDict(base.to_dict())
    config.model.name = "vqgan"
    config.model.size = "maskgit_released"
    config.model.filters = arch["filters"]
    config.model.num_res_blocks = arch["num_res_blocks"]
    config.model.channel_multipliers = list(arch["channel_multipliers"])
    config.model.embedding_dim = arch["embedding_dim"]
    config.model.shortcut = "output"
    config.model.pixel_range = "unit"
    config.quantizer.name = "vq"
    config.quantizer.vq.codebook_size = arch["codebook_size"]
    config.dataset.image_size = int(image_size)
    config.compute_dtype = "float32"
    # A discriminator that fits the resolution (each StyleGAN block halves it), so that small
    # converted models (tests) fine-tune too; the released resolutions keep the preset's.
    multipliers = list(config.discriminator.channel_multipliers)
    while len(multipliers) > 1 and int(image_size) % (2 ** len(multipliers)):
        multipliers.pop()
    config.discriminator.channel_multipliers = multipliers
    return config


def _tokenizer_abstract(config):
    from vqjax.quantizers.linen import RNG_STREAM
    from vqjax.train.tokenizer import build_tokenizer

    model = build_tokenizer(config)
    size = int(config.dataset.image_size)
    key = jax.random.key(0)
    abstract = jax.eval_shape(lambda: model.init(
        {"params": key, RNG_STREAM: key}, jnp.zeros((1, size, size, 3), jnp.float32)))
    return model, abstract


def tokenizer_from_checkpoint(path, base_config: ml_collections.ConfigDict,
                              image_size: int = 256) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, variables {"params", "quantizer_state"}) of the vqjax tokenizer run equal to the
    released tokenizer file `path`. `image_size`: the resolution it is used at (256 or 512: the
    same network; it sets the run's dataset.image_size)."""
    from vqjax.quantizers.linen import QUANTIZER_STATE

    tree = read_flax_msgpack(path, TOKENIZER)
    if set(tree) != {"params"}:
        raise ConversionError(f"{TOKENIZER}: unexpected collections {sorted(set(tree) - {'params'})}"
                              " (the released tokenizer has only 'params')")
    flat = flatten(tree["params"])
    arch = infer_tokenizer(flat)
    for multiplier in arch["channel_multipliers"]:
        if (arch["filters"] * multiplier) % GROUP_NORM_GROUPS:
            raise ConversionError(f"{TOKENIZER}: {arch['filters'] * multiplier} channels do not "
                                  f"divide into {GROUP_NORM_GROUPS} GroupNorm groups")
    config = tokenizer_config(base_config, arch, image_size)
    model, abstract = _tokenizer_abstract(config)
    ours = flatten(abstract["params"])
    codebook_key = "quantize/quantizer/codebook"
    expected = {k: v.shape for k, v in ours.items() if k != codebook_key}
    expected["quantizer/codebook"] = (arch["codebook_size"], arch["embedding_dim"])
    check_against(flat, expected, TOKENIZER)

    codebook = np.asarray(flat["quantizer/codebook"], np.float32)
    params = {k: np.asarray(flat[k]) for k in expected if k != "quantizer/codebook"}
    if codebook_key in ours:  # gradient-trained codebook (ema_update=False)
        params[codebook_key] = codebook
    state = {}
    for key, spec in flatten(abstract.get(QUANTIZER_STATE, {})).items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf in ("codebook", "embed_avg"):  # EMA codebook (cluster sizes 1)
            value = codebook
        elif leaf == "cluster_size":
            value = np.ones(spec.shape, np.float32)
        elif leaf == "codebook_offset":
            value = np.zeros(spec.shape, np.float32)
        elif leaf == "initted":
            value = np.array(True)
        else:
            raise ConversionError(f"{TOKENIZER}: the configured quantizer has state {key!r} that "
                                  "the released VQ has no value for")
        state[key] = value
    return config, {"params": unflatten(params), QUANTIZER_STATE: unflatten(state)}


# ------------------------------------------------------------------------------------------------
# The transformer
# ------------------------------------------------------------------------------------------------
_BLOCK_RENAMES = {
    "attention": "Attention_0/self_attention",
    "ln_attention": "Attention_0/attention_output_ln",
    "wi": "Mlp_0/intermediate_output",
    "wo": "Mlp_0/layer_output",
    "ln_feed_forward": "Mlp_0/layer_output_ln",
}
_TOP_RENAMES = {
    "word_embedding": "Embed_0/word_embeddings/embedding",
    "position_embedding": "Embed_0/position_embeddings/embedding",
    "ln_embedding": "Embed_0/embeddings_ln",
    "head_hidden": "MlmLayer_0/mlm_dense",
    "head_ln": "MlmLayer_0/mlm_ln",
    "head_output_bias": "MlmLayer_0/mlm_bias/bias",
}


def _transformer_key(ours: str) -> str:
    """The released key of a vqjax bert MaskGIT param path ("block_03/wi/kernel" ->
    "TransformerLayer_3/Mlp_0/intermediate_output/kernel")."""
    first, _, rest = ours.partition("/")
    if m := re.fullmatch(r"block_(\d+)", first):
        module, _, rest = rest.partition("/")
        if module not in _BLOCK_RENAMES:
            raise KeyError(ours)
        return "/".join(filter(None, [f"TransformerLayer_{int(m.group(1))}",
                                      _BLOCK_RENAMES[module], rest]))
    if first not in _TOP_RENAMES:
        raise KeyError(ours)
    return "/".join(filter(None, [_TOP_RENAMES[first], rest]))


def infer_transformer(flat: dict, num_classes: int) -> dict:
    """Architecture of a released transformer's flat params: num_layers, width, num_heads, mlp_dim,
    vocabulary rows, positions, codebook_size (= rows - num_classes - 1) and the token grid."""
    word = get(flat, "Embed_0/word_embeddings/embedding", TRANSFORMER, "(vocabulary, width)")
    positions = get(flat, "Embed_0/position_embeddings/embedding", TRANSFORMER,
                    "(1 + h * w, width)")
    num_layers = _count(flat, r"TransformerLayer_(\d+)/")
    if word.ndim != 2 or positions.ndim != 2 or num_layers < 1:
        raise ConversionError(f"{TRANSFORMER}: word embeddings {word.shape}, position embeddings "
                              f"{positions.shape} and {num_layers} TransformerLayers are not a "
                              "MaskGIT transformer")
    query = get(flat, "TransformerLayer_0/Attention_0/self_attention/query/kernel", TRANSFORMER,
                "(width, heads, head_dim)")
    mlp = get(flat, "TransformerLayer_0/Mlp_0/intermediate_output/kernel", TRANSFORMER,
              "(width, mlp_dim)")
    if query.ndim != 3:
        raise ConversionError(f"{TRANSFORMER}: key 'TransformerLayer_0/Attention_0/"
                              f"self_attention/query/kernel' has shape {query.shape}, expected "
                              "(width, heads, head_dim)")
    vocabulary = int(word.shape[0])
    codebook_size = vocabulary - int(num_classes) - 1
    if codebook_size < 2:
        raise ConversionError(f"{TRANSFORMER}: {vocabulary} vocabulary rows cannot hold "
                              f"{num_classes} classes + the mask token + codes (--num_classes?)")
    grid = int(round(np.sqrt(positions.shape[0] - 1)))
    if grid * grid != positions.shape[0] - 1:
        raise ConversionError(f"{TRANSFORMER}: {positions.shape[0]} positions are not a class "
                              "token + a square token grid")
    return dict(num_layers=num_layers, width=int(word.shape[1]), num_heads=int(query.shape[1]),
                mlp_dim=int(mlp.shape[1]), vocabulary=vocabulary, codebook_size=codebook_size,
                grid=grid, num_classes=int(num_classes))


def maskgit_config(base: ml_collections.ConfigDict, arch: dict, image_size: int,
                   tokenizer_workdir: str) -> ml_collections.ConfigDict:
    """`base` (configs/maskgit.py:released) with the inferred sizes filled in."""
    from vqjax.models import maskgit as maskgit_lib

    fields = base.to_dict()
    size = (arch["num_layers"], arch["width"], arch["num_heads"], arch["mlp_dim"])
    named = [name for name, s in maskgit_lib.SIZES.items()
             if (s.num_layers, s.width, s.num_heads, s.mlp_dim) == size]
    fields["model"]["size"] = named[0] if named else list(size)  # "B" for the released ones
    config = ml_collections.ConfigDict(fields)
    config.model.architecture = "bert"
    config.model.num_classes = arch["num_classes"]
    config.model.prediction = "index"
    config.dataset.image_size = int(image_size)
    config.tokenizer_workdir = str(tokenizer_workdir)
    config.compute_dtype = "float32"
    return config


def transformer_from_checkpoint(path, base_config: ml_collections.ConfigDict, tokenizer_model,
                                tokenizer_workdir: str, *, num_classes: int = RELEASED_NUM_CLASSES,
                                image_size: int | None = None
                                ) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, params) of the vqjax MaskGIT run equal to the released transformer file `path`,
    over the tokens of `tokenizer_model` (a vqjax tokenizer, e.g. converted from the matching
    released tokenizer) whose run is `tokenizer_workdir`. The token grid comes from the
    position embeddings; `image_size` (if given) must agree with grid x the tokenizer's factor,
    and the vocabulary with the tokenizer's codebook + num_classes + 1."""
    tree = read_flax_msgpack(path, TRANSFORMER)
    if set(tree) != {"params"}:
        raise ConversionError(f"{TRANSFORMER}: unexpected collections "
                              f"{sorted(set(tree) - {'params'})} (the released transformer has "
                              "only 'params')")
    flat = flatten(tree["params"])
    arch = infer_transformer(flat, num_classes)
    check_compatible(arch, tokenizer_model, image_size)
    size = arch["grid"] * _factor(tokenizer_model)
    config = maskgit_config(base_config, arch, size, tokenizer_workdir)

    from vqjax.train.maskgit import build_maskgit

    model = build_maskgit(config, tokenizer_model, arch["num_classes"])
    tokens = jnp.zeros((1, arch["grid"], arch["grid"]), jnp.int32)
    abstract = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, tokens,
                                                 jnp.zeros((1,), jnp.int32)))
    ours = flatten(abstract["params"])
    mapping = {key: _transformer_key(key) for key in ours}
    check_against(flat, {mapping[k]: v.shape for k, v in ours.items()}, TRANSFORMER)
    params = unflatten({key: np.asarray(flat[source]) for key, source in mapping.items()})
    return config, params


def check_compatible(arch: dict, tokenizer_model, image_size: int | None) -> None:
    """The transformer's vocabulary and grid fit the tokenizer (and `image_size`), else an error
    (raised before anything is written)."""
    codes = int(tokenizer_model.built_quantizer().codebook_size)
    if arch["codebook_size"] != codes:
        raise ConversionError(
            f"the transformer's vocabulary of {arch['vocabulary']} rows = {arch['codebook_size']} "
            f"codes + {arch['num_classes']} classes + 1 mask token, but the tokenizer has "
            f"{codes} codes (mismatched codebook sizes; or --num_classes is wrong)")
    factor = _factor(tokenizer_model)
    size = arch["grid"] * factor
    if image_size is not None and int(image_size) != size:
        raise ConversionError(
            f"the transformer's {arch['grid']}x{arch['grid']} token grid (position embeddings) "
            f"at the tokenizer's downsampling factor {factor} is {size} px, but the tokenizer is "
            f"for {image_size} px: a {size} px transformer with a {image_size} px tokenizer")


def _factor(tokenizer_model) -> int:
    """Pixels per token along a side."""
    probe = 1024
    return probe // int(tokenizer_model.token_grid(probe, probe)[0])


def describe(arch: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in arch.items())
