"""taming-transformers' VQGAN (Esser et al. 2021), exactly as released; LlamaGen's VQ is a variant.

    model = taming_vqgan.create("taming_f16_1024")     # vqgan_imagenet_f16_1024
    variables = model.init({"params": rng}, images)  # images [B, H, W, 3] in [-1, 1]
    reconstruction, aux = model.apply(variables, images)
    z_q, indices, aux = model.apply(variables, images, method=model.encode)
    images = model.apply(variables, indices, method=model.decode_indices)

The network of `taming.models.vqgan.VQModel` (taming/modules/diffusionmodules/model.py
`Encoder`/`Decoder` + `quant_conv`/`post_quant_conv` + `VectorQuantizer2`), detail for detail, so
that `vqjax.convert.taming` loads the released checkpoints and reproduces their indices and
reconstructions (tests/test_taming_vqgan.py checks against the reference modules):

- Encoder: conv3x3(filters) -> for each level i: `num_res_blocks` ResnetBlocks to
  filters * channel_multipliers[i] channels, each followed by an AttnBlock when i is an attention
  level; then (all but the last level) a stride-2 conv3x3 after padding right/bottom by one pixel
  (taming's asymmetric padding) -> middle: ResnetBlock, AttnBlock, ResnetBlock -> GroupNorm -> swish
  -> conv3x3(z_channels) -> quant_conv 1x1 (z_channels -> embedding_dim).
- Decoder: post_quant_conv 1x1 (embedding_dim -> z_channels) -> conv3x3 -> middle (as above) -> for
  each level from the last: `num_res_blocks + 1` ResnetBlocks (+ AttnBlocks at attention levels),
  then (all but level 0) nearest 2x upsampling + conv3x3 -> GroupNorm -> swish -> conv3x3(3).
- ResnetBlock: GroupNorm -> swish -> conv3x3 -> GroupNorm -> swish -> dropout -> conv3x3, plus x
  (through a 1x1 `nin_shortcut` when the width changes). All convs have biases (unlike MaskGIT's).
- AttnBlock: single-head self-attention over the h*w positions with 1x1-conv q, k, v, proj_out,
  scale 1/sqrt(C), after a GroupNorm; residual.
- GroupNorm: 32 groups, eps 1e-6 (variance computed as E[(x - mean)^2], as torch does).
- Attention levels: taming places them by resolution (`attn_resolutions: [16]` at 256 px, i.e. the
  lowest-resolution level of f16); here they are level indices, `attention_levels=None` meaning the
  last (lowest-resolution) level, so the network does not change with the input size.

The quantizer is any `vqjax.quantizers` name. With "vq" and `quantizer_options=None` it is taming's
`VectorQuantizer2`: a gradient-trained codebook (`ema_update=False`) of 1024 codes, nearest code by
squared euclidean distance, straight-through gradients, and taming's `legacy=True` loss
|sg[e] - z|^2 + 0.25 |e - sg[z]|^2 (so `commitment_weight=1.0`, `codebook_weight=0.25`: the beta
lands on the codebook term, as in the released training). LlamaGen's VQ-16 (`llamagen_vq16`) is this
network with 8-d l2-normalised codes (`use_cosine_sim=True`: the nearest code on the sphere, and
straight-through from the normalised latent, as LlamaGen's `VectorQuantizer(l2_norm=True)`), an
8-channel quant_conv, and LlamaGen's loss weights (commitment 0.25, codebook 1.0).

Differences from the reference that do not change outputs: NHWC layout; the euclidean argmin is
computed as argmax(2 z.e - |e|^2) (|z|^2 is constant per row), so a latent equidistant from two
codes up to float32 rounding may take the other one (never seen in the tests; exact ties take the
lower index in both). `precision` sets the precision of every conv and attention product: JAX's
default (None) uses TF32 on recent GPUs and bf16 passes on TPUs for float32 inputs, which is not
within 1e-4 of the released networks, so converted configs set "highest".
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models import layers, tokenizer

Array = jax.Array
MODEL = "taming_vqgan"

# taming's VectorQuantizer2(n_e=1024, e_dim=256, beta=0.25, legacy=True).
DEFAULT_VQ_OPTIONS = {
    "codebook_size": 1024, "ema_update": False, "commitment_weight": 1.0, "codebook_weight": 0.25,
}

def _options(**options) -> tuple:
    """Quantizer options as a hashable tuple of pairs (module fields are hashed by Flax)."""
    return tuple(sorted(options.items()))


PRESETS: dict[str, dict[str, Any]] = {
    # taming configs/imagenet_vqgan.yaml = vqgan_imagenet_f16_1024 (rFID 7.94 on ImageNet val).
    "taming_f16_1024": dict(filters=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
                            z_channels=256, embedding_dim=256),
    # vqgan_imagenet_f16_16384: the same network with 16384 codes (rFID 4.98).
    "taming_f16_16384": dict(filters=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
                             z_channels=256, embedding_dim=256,
                             quantizer_options=_options(
                                 **{**DEFAULT_VQ_OPTIONS, "codebook_size": 16384})),
    # LlamaGen VQ-16 (vq_ds16_c2i.pt): 16384 l2-normalised 8-d codes (rFID 2.19).
    "llamagen_vq16": dict(filters=128, channel_multipliers=(1, 1, 2, 2, 4), num_res_blocks=2,
                          z_channels=256, embedding_dim=8,
                          quantizer_options=_options(
                              codebook_size=16384, ema_update=False, use_cosine_sim=True,
                              commitment_weight=0.25, codebook_weight=1.0)),
    # CPU-sized: f4, 32 -> 64 channels, attention at the 8x8 level of 32 px inputs.
    "tiny": dict(filters=32, channel_multipliers=(1, 1, 2), num_res_blocks=1, z_channels=64,
                 quantizer_options=_options(**{**DEFAULT_VQ_OPTIONS, "codebook_size": 128})),
}


def quantizer_options_for(quantizer, options) -> dict:
    """`options` as a dict; None means taming's options for "vq" and none for other names."""
    return tokenizer.quantizer_options_for(quantizer, options, DEFAULT_VQ_OPTIONS)


class _Parts:
    """Conv / GroupNorm constructors shared by the blocks (taming's layer settings)."""

    @staticmethod
    def conv(module, features: int, kernel: int, name: str, strides: int = 1, padding="SAME"):
        return nn.Conv(features, (kernel, kernel), strides=(strides, strides), padding=padding,
                       precision=module.precision, dtype=module.dtype,
                       param_dtype=module.param_dtype, name=name,
                       conv_general_dilated=layers.conv_general_dilated)

    @staticmethod
    def norm(module, name: str):
        # torch's GroupNorm: biased variance from centred values (not E[x^2] - E[x]^2), eps 1e-6.
        return nn.GroupNorm(num_groups=module.norm_groups, epsilon=module.norm_epsilon,
                            use_fast_variance=False, dtype=module.dtype,
                            param_dtype=module.param_dtype, name=name)


class ResnetBlock(nn.Module):
    """taming's ResnetBlock (no time embedding): [B, H, W, C_in] -> [B, H, W, features]."""

    features: int
    norm_groups: int = 32
    norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        h = nn.swish(_Parts.norm(self, "norm1")(x))
        h = _Parts.conv(self, self.features, 3, "conv1")(h)
        h = nn.swish(_Parts.norm(self, "norm2")(h))
        h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
        h = _Parts.conv(self, self.features, 3, "conv2")(h)
        if x.shape[-1] != self.features:
            x = _Parts.conv(self, self.features, 1, "nin_shortcut")(x)
        return x + h


class AttnBlock(nn.Module):
    """taming's AttnBlock: one-head self-attention over positions, residual. [B, H, W, C]."""

    norm_groups: int = 32
    norm_epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        batch, height, width, channels = x.shape
        h = _Parts.norm(self, "norm")(x)
        q, k, v = (_Parts.conv(self, channels, 1, name)(h).reshape(batch, height * width, channels)
                   for name in ("q", "k", "v"))  # each [B, N, C]
        logits = jnp.einsum("bic,bjc->bij", q, k, precision=self.precision,
                            preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits * (channels ** -0.5), axis=-1)  # [B, N(query), N(key)]
        h = jnp.einsum("bij,bjc->bic", weights.astype(v.dtype), v,
                       precision=self.precision)  # [B, N, C]
        h = _Parts.conv(self, channels, 1, "proj_out")(h.reshape(batch, height, width, channels))
        return x + h


class TamingStack(nn.Module):
    """The fields and the blocks shared by taming's encoder and decoder."""

    filters: int
    channel_multipliers: Sequence[int]
    num_res_blocks: int
    attention_levels: Sequence[int]
    norm_groups: int = 32
    norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    # Called from the compact `__call__` of a subclass.
    def _resnet(self, features: int, name: str) -> ResnetBlock:
        return ResnetBlock(features, dropout_rate=self.dropout_rate, name=name,
                           **self._norm_fields())

    def _attention(self, name: str) -> AttnBlock:
        return AttnBlock(name=name, **self._norm_fields())

    def _norm_fields(self) -> dict:
        return dict(norm_groups=self.norm_groups, norm_epsilon=self.norm_epsilon, dtype=self.dtype,
                    param_dtype=self.param_dtype, precision=self.precision)

    def _middle(self, x: Array, train: bool) -> Array:
        """taming's `mid`: ResnetBlock, AttnBlock, ResnetBlock at the input's width."""
        x = self._resnet(x.shape[-1], "mid_block_1")(x, train)
        x = self._attention("mid_attn_1")(x)
        return self._resnet(x.shape[-1], "mid_block_2")(x, train)

    def _output(self, x: Array, features: int) -> Array:
        """norm_out -> swish -> conv_out (3x3) to `features` channels."""
        x = nn.swish(_Parts.norm(self, "norm_out")(x))
        return _Parts.conv(self, features, 3, "conv_out")(x)


class TamingEncoder(TamingStack, kw_only=True):
    """Images [B, H, W, C] -> [B, H/f, W/f, z_channels], f = 2^(len(channel_multipliers)-1).

    Sub-module names follow taming's state dict: `down_{i}_block_{j}` = encoder.down.i.block.j,
    `down_{i}_attn_{j}`, `down_{i}_downsample` = encoder.down.i.downsample.conv, `mid_block_1`,
    `mid_attn_1`, `mid_block_2`, `conv_in`, `norm_out`, `conv_out`.
    """

    z_channels: int

    @nn.compact
    def __call__(self, x: Array, train: bool = False) -> Array:
        x = _Parts.conv(self, self.filters, 3, "conv_in")(x.astype(self.dtype))
        num_levels = len(self.channel_multipliers)
        for level, multiplier in enumerate(self.channel_multipliers):
            for j in range(self.num_res_blocks):
                x = self._resnet(self.filters * multiplier, f"down_{level}_block_{j}")(x, train)
                if level in self.attention_levels:
                    x = self._attention(f"down_{level}_attn_{j}")(x)
            if level != num_levels - 1:  # pad right and bottom by one, then a stride-2 conv3x3
                x = _Parts.conv(self, x.shape[-1], 3, f"down_{level}_downsample", strides=2,
                                padding=((0, 1), (0, 1)))(x)
        x = self._middle(x, train)
        return self._output(x, self.z_channels)  # [B, h, w, z_channels]


class TamingDecoder(TamingStack):
    """[B, h, w, z_channels] -> images [B, h*f, w*f, out_channels] (float32).

    Names follow taming's state dict, levels numbered by resolution as taming's `decoder.up` list
    (level 0 = full resolution): `up_{i}_block_{j}`, `up_{i}_attn_{j}`, `up_{i}_upsample`
    (= decoder.up.i.upsample.conv), `mid_*`, `conv_in`, `norm_out`, `conv_out`.
    """

    out_channels: int = 3

    @nn.compact
    def __call__(self, z: Array, train: bool = False) -> Array:
        width = self.filters * self.channel_multipliers[-1]
        x = _Parts.conv(self, width, 3, "conv_in")(z.astype(self.dtype))
        x = self._middle(x, train)
        for level in reversed(range(len(self.channel_multipliers))):
            width = self.filters * self.channel_multipliers[level]
            for j in range(self.num_res_blocks + 1):
                x = self._resnet(width, f"up_{level}_block_{j}")(x, train)
                if level in self.attention_levels:
                    x = self._attention(f"up_{level}_attn_{j}")(x)
            if level != 0:
                x = layers.upsample_nearest(x, 2)
                x = _Parts.conv(self, width, 3, f"up_{level}_upsample")(x)
        return self._output(x, self.out_channels).astype(jnp.float32)


class TamingVQGAN(tokenizer.LevelsTokenizer):
    """Encoder -> quant_conv -> quantizer (any, by name) -> post_quant_conv -> decoder.

    Fields: those of every tokenizer (`quantizer`, `quantizer_options` (None: taming's
    VectorQuantizer2 for "vq"), `channels`, `dtype`, `param_dtype`), then `filters` (taming's
    `ch`), `channel_multipliers` (`ch_mult`; n levels downsample by 2^(n-1)), `num_res_blocks`,
    `attention_levels` (level indices with AttnBlocks after each ResnetBlock; None = the last
    level, taming's `attn_resolutions=[16]` at f16/256 px), `z_channels` (encoder output / decoder
    input width), `embedding_dim` (quant_conv output = code width; None: what the quantizer needs,
    else `z_channels`), `norm_groups`, `norm_epsilon`, `dropout_rate` (ResnetBlocks, training
    only), `precision` (of every conv and attention product, e.g. "highest"; None is JAX's
    default, which on GPUs computes float32 convs with TF32 and on TPUs with bfloat16 passes:
    fast, but not within 1e-4 of the released networks; converted configs set "highest").
    """

    filters: int = 128
    channel_multipliers: Sequence[int] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attention_levels: Sequence[int] | None = None
    z_channels: int = 256
    embedding_dim: int | None = None
    norm_groups: int = 32
    norm_epsilon: float = 1e-6
    dropout_rate: float = 0.0
    precision: Any = None

    model_name = MODEL
    default_vq_options = DEFAULT_VQ_OPTIONS
    latent_field = "embedding_dim"

    # -- configuration, usable on an unbound model -------------------------------------------
    def default_latent_channels(self) -> int:
        return self.z_channels

    @property
    def resolved_attention_levels(self) -> tuple[int, ...]:
        if self.attention_levels is None:
            return (len(self.channel_multipliers) - 1,)
        return tuple(int(level) for level in self.attention_levels)

    def check_network_fields(self):
        if self.filters < 1 or self.num_res_blocks < 1 or self.z_channels < 1:
            raise ValueError(
                f"{MODEL}: need `filters`, `num_res_blocks` and `z_channels` >= 1, got "
                f"{self.filters}, {self.num_res_blocks}, {self.z_channels}"
            )

    def check_other_fields(self):
        num_levels = len(tuple(self.channel_multipliers))
        for level in self.resolved_attention_levels:
            if not 0 <= level < num_levels:
                raise ValueError(
                    f"{MODEL}: `attention_levels` entry {level} is not a level index in "
                    f"[0, {num_levels - 1}] (one level per `channel_multipliers` entry)"
                )

    # -- the networks ------------------------------------------------------------------------
    def _network_fields(self) -> dict:
        """The fields the encoder and decoder share with this model."""
        fields = {name: getattr(self, name) for name in (
            "filters", "num_res_blocks", "norm_groups", "norm_epsilon", "dropout_rate", "dtype",
            "param_dtype", "precision")}
        return {**fields, "channel_multipliers": tuple(self.channel_multipliers),
                "attention_levels": self.resolved_attention_levels}

    def _conv1x1(self, features: int) -> nn.Conv:
        return nn.Conv(features, (1, 1), precision=self.precision, dtype=self.dtype,
                       param_dtype=self.param_dtype,
                       conv_general_dilated=layers.conv_general_dilated)

    def make_encoder(self, latent_channels: int) -> TamingEncoder:
        del latent_channels  # the encoder's output is z_channels wide; quant_conv maps it
        return TamingEncoder(z_channels=self.z_channels, **self._network_fields())

    def make_quant_conv(self, latent_channels: int) -> nn.Conv:
        return self._conv1x1(latent_channels)

    def make_post_quant_conv(self) -> nn.Conv:
        return self._conv1x1(self.z_channels)

    def make_decoder(self) -> TamingDecoder:
        return TamingDecoder(out_channels=self.channels, **self._network_fields())


def create(preset: str = "taming_f16_1024", **overrides) -> TamingVQGAN:
    """A TamingVQGAN from a preset in PRESETS ("taming_f16_1024", "taming_f16_16384",
    "llamagen_vq16", "tiny"), fields overridden."""
    return TamingVQGAN.from_preset(PRESETS, preset, **overrides)
