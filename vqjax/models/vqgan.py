"""The conv VQGAN tokenizer of MaskGIT (Chang et al. 2022, `maskgit/nets/vqgan_tokenizer.py`).

    model = vqgan.create("maskgit")                  # f16, 1024 codes of 256-d
    variables = model.init({"params": rng}, images)  # images [B, H, W, 3] in [-1, 1]
    reconstruction, aux = model.apply(variables, images, train=True, mutable=["quantizer_state"])
    z_q, indices, aux = model.apply(variables, images, method=model.encode)
    images = model.apply(variables, indices, method=model.decode_indices)

Taming's VQGAN without the non-local (attention) layers. Encoder: conv3x3 -> for each channel
multiplier m_i: `num_res_blocks` ResBlocks (GroupNorm + swish) at `filters * m_i` channels, then
2x average-pool downsampling except after the last -> `num_res_blocks` more ResBlocks ->
GroupNorm -> swish -> conv1x1 to `embedding_dim`. Decoder mirrors it: conv3x3 -> ResBlocks ->
for each multiplier in reverse: ResBlocks, then nearest-neighbour 2x upsampling + conv3x3 except
after the first level -> GroupNorm -> swish -> conv3x3 to 3 channels. len(channel_multipliers) = n
gives a downsampling factor of 2^(n-1): (1, 1, 2, 2, 4) is f16 (256px -> 16x16 tokens).

Sub-modules are created in MaskGIT's order with Flax's automatic names, so MaskGIT's encoder and
decoder parameter trees load by name. The released tokenizer (`create("maskgit_released")`, what
`python -m launch.convert --from=maskgit` builds) differs from our default in two options:
`shortcut="output"` (see layers.ResBlock: its 1x1 shortcut projects the residual branch's output)
and `pixel_range="unit"` (its encoder sees images in [0, 1] and its decoder predicts [0, 1]; the
model's interface stays [-1, 1] and maps at both ends). `conv_downsample` stays False as in its
configs.

The quantizer is any `vqjax.quantizers` name; `embedding_dim` follows from it when it fixes its
input width (FSQ's levels, a `dim` option). Inputs are checked when traced: rank, channel count,
and divisibility by the downsampling factor raise a ValueError naming the field. The [-1, 1] value
range is not checked.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models import layers, tokenizer

Array = jax.Array
MODEL = "vqgan"
PIXEL_RANGES = ("signed", "unit")  # the network's own pixel range: [-1, 1] or [0, 1]

# MaskGIT's ImageNet tokenizer (configs/vqgan_config.py): 1024 codes of 256-d, commitment 0.25.
DEFAULT_VQ_OPTIONS = {"codebook_size": 1024, "commitment_weight": 0.25}
DEFAULT_EMBEDDING_DIM = 256

PRESETS: dict[str, dict[str, Any]] = {
    # f16, 128 base filters, (1, 1, 2, 2, 4), 2 res blocks: ~ MaskGIT's ImageNet tokenizer.
    "maskgit": dict(filters=128, num_res_blocks=2, channel_multipliers=(1, 1, 2, 2, 4)),
    # MaskGIT's released ImageNet tokenizers (256 and 512 px: the same network), exactly.
    "maskgit_released": dict(filters=128, num_res_blocks=2, channel_multipliers=(1, 1, 2, 2, 4),
                             shortcut="output", pixel_range="unit"),
    # f8 variant (MaskGIT's 512px configs keep f16; this is for 32x32 tokens at 256px).
    "f8": dict(filters=128, num_res_blocks=2, channel_multipliers=(1, 1, 2, 4)),
    # CPU-sized: f4, 32 -> 64 channels, one res block per level (32px -> 8x8 tokens).
    "tiny": dict(filters=32, num_res_blocks=1, channel_multipliers=(1, 1, 2), norm_groups=8),
}


def quantizer_options_for(quantizer, options) -> dict:
    """`options` as a dict; None means MaskGIT's options for "vq" and none for other names."""
    return tokenizer.quantizer_options_for(quantizer, options, DEFAULT_VQ_OPTIONS)


class ConvStack(nn.Module):
    """The fields and layer constructors shared by the conv encoder and decoder."""

    filters: int
    num_res_blocks: int
    channel_multipliers: Sequence[int]
    norm_groups: int = 32
    shortcut: str = "input"
    pixel_range: str = "signed"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    # Called from the compact `__call__` of a subclass (Flax's automatic names, MaskGIT's order).
    def _conv(self, features: int, kernel: int, **kw) -> nn.Conv:
        return nn.Conv(features, (kernel, kernel), dtype=self.dtype, param_dtype=self.param_dtype,
                       conv_general_dilated=layers.conv_general_dilated, **kw)

    def _block(self, features: int) -> layers.ResBlock:
        return layers.ResBlock(features, self.norm_groups, self.shortcut, dtype=self.dtype,
                               param_dtype=self.param_dtype)

    def _norm_swish(self, x: Array) -> Array:
        x = nn.GroupNorm(self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype)(x)
        return nn.swish(x)


class ConvEncoder(ConvStack, kw_only=True):
    """Images [B, H, W, C] in [-1, 1] -> latents [B, H/f, W/f, embedding_dim],
    f = 2^(len(multipliers)-1). With `pixel_range="unit"` the network sees the images in [0, 1]."""

    embedding_dim: int
    conv_downsample: bool = False

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train  # no dropout
        if self.pixel_range == "unit":
            x = (x + 1.0) * 0.5  # [-1, 1] -> [0, 1], what the released encoder saw
        x = self._conv(self.filters, 3, use_bias=False)(x.astype(self.dtype))
        num_levels = len(self.channel_multipliers)
        for level, multiplier in enumerate(self.channel_multipliers):
            filters = self.filters * multiplier
            for _ in range(self.num_res_blocks):
                x = self._block(filters)(x)
            if level < num_levels - 1:
                if self.conv_downsample:
                    x = self._conv(filters, 4, strides=(2, 2))(x)
                else:
                    x = layers.downsample_avg(x)
        for _ in range(self.num_res_blocks):
            x = self._block(filters)(x)
        return self._conv(self.embedding_dim, 1)(self._norm_swish(x))  # [B, h, w, embedding_dim]


class ConvDecoder(ConvStack):
    """Codes [B, h, w, D] -> images [B, h*f, w*f, out_channels] in [-1, 1] (float32). With
    `pixel_range="unit"` the network predicts [0, 1], mapped to [-1, 1]."""

    out_channels: int = 3

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        del train  # no dropout
        filters = self.filters * self.channel_multipliers[-1]
        x = self._conv(filters, 3, use_bias=True)(x.astype(self.dtype))
        for _ in range(self.num_res_blocks):
            x = self._block(filters)(x)
        for level in reversed(range(len(self.channel_multipliers))):
            filters = self.filters * self.channel_multipliers[level]
            for _ in range(self.num_res_blocks):
                x = self._block(filters)(x)
            if level > 0:
                x = layers.upsample_nearest(x, 2)
                x = self._conv(filters, 3)(x)
        images = self._conv(self.out_channels, 3)(self._norm_swish(x)).astype(jnp.float32)
        if self.pixel_range == "unit":
            images = images * 2.0 - 1.0  # the released decoder predicts [0, 1]
        return images


class VQGAN(tokenizer.LevelsTokenizer):
    """Conv encoder -> quantizer (any, by name) -> conv decoder. See the module docstring.

    Fields: those of every tokenizer (`quantizer`, `quantizer_options` (None: MaskGIT's 1024-code
    vq for "vq", none otherwise), `channels`, `dtype`, `param_dtype`), then `filters` (base
    channels), `num_res_blocks`, `channel_multipliers` (one per level; n levels downsample by
    2^(n-1)), `embedding_dim` (None: what the quantizer needs, else 256), `norm_groups` (GroupNorm
    groups; every level's channels must divide by it), `conv_downsample` (strided 4x4 conv instead
    of average pooling), `shortcut` ("input" | "output", MaskGIT's), `pixel_range` (what the
    network itself sees and predicts: "signed" [-1, 1], or "unit" [0, 1] as MaskGIT's released
    tokenizer; `encode`/`decode` always take and give [-1, 1]).
    """

    filters: int = 128
    num_res_blocks: int = 2
    channel_multipliers: Sequence[int] = (1, 1, 2, 2, 4)
    embedding_dim: int | None = None
    norm_groups: int = 32
    conv_downsample: bool = False
    shortcut: str = "input"
    pixel_range: str = "signed"

    model_name = MODEL
    default_vq_options = DEFAULT_VQ_OPTIONS
    latent_field = "embedding_dim"

    # -- configuration, usable on an unbound model -------------------------------------------
    def default_latent_channels(self) -> int:
        return DEFAULT_EMBEDDING_DIM

    def check_network_fields(self):
        if self.filters < 1 or self.num_res_blocks < 0:
            raise ValueError(
                f"{MODEL}: need `filters` >= 1 and `num_res_blocks` >= 0, got {self.filters}, "
                f"{self.num_res_blocks}"
            )

    def check_other_fields(self):
        if self.shortcut not in ("input", "output"):
            raise ValueError(f"{MODEL}: unknown `shortcut` {self.shortcut!r}; 'input' or 'output'")
        if self.pixel_range not in PIXEL_RANGES:
            raise ValueError(
                f"{MODEL}: unknown `pixel_range` {self.pixel_range!r}; choose one of {PIXEL_RANGES}"
            )

    # -- the networks ------------------------------------------------------------------------
    def _network_fields(self) -> dict:
        """The fields the encoder and decoder share with this model."""
        fields = {name: getattr(self, name) for name in (
            "filters", "num_res_blocks", "norm_groups", "shortcut", "pixel_range", "dtype",
            "param_dtype")}
        return {**fields, "channel_multipliers": tuple(self.channel_multipliers)}

    def make_encoder(self, latent_channels: int) -> ConvEncoder:
        return ConvEncoder(embedding_dim=latent_channels, conv_downsample=self.conv_downsample,
                           **self._network_fields())

    def make_decoder(self) -> ConvDecoder:
        return ConvDecoder(out_channels=self.channels, **self._network_fields())


def create(preset: str = "maskgit", **overrides) -> VQGAN:
    """A VQGAN from a preset name in PRESETS ("maskgit", "f8", "tiny"), fields overridden."""
    return VQGAN.from_preset(PRESETS, preset, **overrides)
