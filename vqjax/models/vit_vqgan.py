"""ViT-VQGAN (Yu et al. 2021, "Vector-quantized Image Modeling with Improved VQGAN").

    model = vit_vqgan.create("S", quantizer="fsq", quantizer_options={"levels": (8, 5, 5, 5)})
    variables = model.init({"params": rng}, images)                 # images [B, H, W, 3] in [-1, 1]
    reconstruction, aux = model.apply(variables, images)             # aux: QuantizerOutput
    z_q, indices, aux = model.apply(variables, images, method=model.encode)
    images = model.apply(variables, indices, method=model.decode_indices)

Encoder: p x p patches -> Dense(width) + position embeddings -> pre-LN transformer -> LayerNorm ->
Dense(width) -> tanh -> Dense(latent_dim) ("a two-layer feed-forward network with a tanh activation
layer in the middle", Sec. 3.1). Decoder: Dense(width) from the code dimension + position
embeddings -> transformer -> LayerNorm -> Dense(width) -> tanh -> Dense(p*p*3) -> unpatchify.
With `logit_laplace=True` the decoder emits 6 channels per pixel: [..., :3] the location mu and
[..., 3:] the log-scale of the logit-Laplace distribution (the loss maps them to images).

The quantizer is any `vqjax.quantizers` name with its options; the encoder's output width
(`latent_dim`) follows from the quantizer (FSQ: len(levels); a `dim` option; LFQ/BSQ: bits), so
swapping the quantizer in a config is the only change needed. The paper's factorized, l2-normalised
8192 x 32 codebook is the vq quantizer's `codebook_dim=32, use_cosine_sim=True` (the default here).

Sizes (paper, Table 1; encoder and decoder each): S = 8 layers / width 512 / 8 heads / MLP 2048,
B = 12 / 768 / 12 / 3072, L = 32 / 1280 / 16 / 5120 (the paper's ViT-VQGAN-SL pairs an S encoder
with an L decoder). `tiny` (2 / 64 / 2 / 128, patch 4) trains on a CPU in minutes.
Parameter counts per size and resolution: docs/models.md.

Inputs are checked when traced: rank, channel count, and divisibility by `patch_size` raise a
ValueError naming the field. The [-1, 1] value range is not checked (inputs are usually traced).
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax.models import layers, tokenizer

Array = jax.Array
MODEL = "vit_vqgan"


ViTSize = layers.TransformerSize  # shape of one ViT stack (encoder or decoder)


SIZES: dict[str, ViTSize] = {
    "tiny": ViTSize(num_layers=2, width=64, num_heads=2, mlp_dim=128),
    "S": ViTSize(num_layers=8, width=512, num_heads=8, mlp_dim=2048),
    "B": ViTSize(num_layers=12, width=768, num_heads=12, mlp_dim=3072),
    # ViT-VQGAN paper Table 1 "Large" (its ViT-VQGAN-SL uses this as the decoder); the unofficial
    # enhancing-transformers imagenet_vitvq_large.yaml uses the same decoder shape.
    "L": ViTSize(num_layers=32, width=1280, num_heads=16, mlp_dim=5120),
}

# Model-level presets: `create(name)`. 256px images give a 32x32 token grid with patch 8.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(encoder_size="tiny", decoder_size="tiny", patch_size=4),
    "S": dict(encoder_size="S", decoder_size="S", patch_size=8),
    "B": dict(encoder_size="B", decoder_size="B", patch_size=8),
    "L": dict(encoder_size="L", decoder_size="L", patch_size=8),
    "SL": dict(encoder_size="S", decoder_size="L", patch_size=8),
}

# The paper's quantizer: 8192 codes looked up in a 32-d l2-normalised space (factorized codes).
DEFAULT_VQ_OPTIONS = {"codebook_size": 8192, "codebook_dim": 32, "use_cosine_sim": True}


def resolve_size(size, field: str) -> ViTSize:
    """A size name, a ViTSize, a (num_layers, width, num_heads, mlp_dim) tuple or a mapping."""
    return layers.resolve_transformer_size(MODEL, size, SIZES, field)


def quantizer_options_for(quantizer, options) -> dict:
    """`options` as a dict; None means the paper's options for "vq" and none for other names."""
    return tokenizer.quantizer_options_for(quantizer, options, DEFAULT_VQ_OPTIONS)


class ViTStack(nn.Module):
    """The fields and the transformer trunk shared by the ViT encoder and decoder."""

    size: ViTSize
    patch_size: int
    posemb: str = "learned"
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _trunk(self, tokens: Array, grid: tuple[int, int], train: bool, embedding: str,
               head_features: int) -> Array:
        """[B, h*w, F] -> Dense(width) named `embedding` + position embeddings -> dropout ->
        transformer -> LayerNorm -> tanh head -> [B, h*w, head_features]. Called from the
        compact `__call__` of a subclass."""
        tokens = nn.Dense(
            self.size.width, dtype=self.dtype, param_dtype=self.param_dtype, name=embedding
        )(tokens)  # [B, h*w, width]
        tokens = layers.PositionEmbedding2D(
            self.posemb, self.dtype, self.param_dtype, name="position_embedding"
        )(tokens, grid)
        tokens = nn.Dropout(self.dropout_rate)(tokens, deterministic=not train)
        tokens = layers.transformer_for(self, self.size)(tokens, not train)
        return layers.TanhHead(
            self.size.width, head_features, self.dtype, self.param_dtype, name="head"
        )(tokens)  # [B, h*w, head_features]


class ViTEncoder(ViTStack, kw_only=True):
    """Images [B, H, W, C] -> latents [B, H/p, W/p, latent_dim]."""

    latent_dim: int

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        p = self.patch_size
        grid = (images.shape[1] // p, images.shape[2] // p)
        tokens = layers.patchify(images.astype(self.dtype), p)  # [B, h*w, p*p*C]
        latents = self._trunk(tokens, grid, train, "patch_embedding", self.latent_dim)
        return einops.rearrange(latents, "b (h w) d -> b h w d", h=grid[0], w=grid[1])


class ViTDecoder(ViTStack):
    """Codes [B, h, w, D] -> images [B, h*p, w*p, out_channels], float32."""

    out_channels: int = 3

    @nn.compact
    def __call__(self, codes: Array, train: bool = False) -> Array:
        p = self.patch_size
        grid = (codes.shape[1], codes.shape[2])
        tokens = einops.rearrange(codes.astype(self.dtype), "b h w d -> b (h w) d")
        patches = self._trunk(tokens, grid, train, "code_embedding", p * p * self.out_channels)
        return layers.unpatchify(patches, grid, p).astype(jnp.float32)  # [B, h*p, w*p, C]


class ViTVQGAN(tokenizer.Tokenizer):
    """ViT encoder -> quantizer (any, by name) -> ViT decoder. See the module docstring.

    Fields: those of every tokenizer (`quantizer`, `quantizer_options` (None: the paper's vq
    options for "vq", none otherwise), `channels`, `dtype`, `param_dtype`), then
    `encoder_size`/`decoder_size` (a name in SIZES, a ViTSize or a 4-tuple; decoder None =
    same as encoder), `patch_size`, `posemb` ("learned" | "sincos2d"), `feed_forward` ("mlp" |
    "geglu" | "swiglu"), `dropout_rate`, `attention_dropout_rate`, `latent_dim` (None: what the
    quantizer needs, else the encoder width), `logit_laplace` (decoder emits mu and log-scale: 6
    channels), `remat`.

    Learned position embeddings fix the token grid at init; "sincos2d" works at any resolution.
    Dropout needs `rngs={"dropout": ...}` when train=True and a rate > 0; a stochastic quantizer
    needs `rngs={"quantizer": ...}`; a stateful one `mutable=["quantizer_state"]` when training.
    """

    encoder_size: Any = "B"
    decoder_size: Any = None
    patch_size: int = 8
    posemb: str = "learned"
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    latent_dim: int | None = None
    logit_laplace: bool = False
    remat: bool = False

    model_name = MODEL
    default_vq_options = DEFAULT_VQ_OPTIONS
    latent_field = "latent_dim"

    # -- configuration, usable on an unbound model -------------------------------------------
    def default_latent_channels(self) -> int:
        return resolve_size(self.encoder_size, "encoder_size").width

    @property
    def output_channels(self) -> int:
        return 2 * self.channels if self.logit_laplace else self.channels

    @property
    def downsampling_factor(self) -> int:
        return self.patch_size

    def divisibility_hint(self) -> tuple[str, str]:
        return "patch_size", f"patch_size={self.patch_size}"

    def _sizes(self) -> tuple[ViTSize, ViTSize]:
        """(encoder size, decoder size), resolved and checked."""
        encoder_size = resolve_size(self.encoder_size, "encoder_size")
        decoder_size = resolve_size(
            self.encoder_size if self.decoder_size is None else self.decoder_size, "decoder_size"
        )
        return encoder_size, decoder_size

    def check_fields(self):
        if int(self.patch_size) < 1:
            raise ValueError(f"{MODEL}: `patch_size` must be >= 1, got {self.patch_size}")
        if self.posemb not in layers.POSEMB_TYPES:
            raise ValueError(
                f"{MODEL}: unknown `posemb` {self.posemb!r}; choose one of {layers.POSEMB_TYPES}"
            )
        if self.feed_forward not in layers.FEED_FORWARD_TYPES:
            raise ValueError(
                f"{MODEL}: unknown `feed_forward` {self.feed_forward!r}; choose one of "
                f"{layers.FEED_FORWARD_TYPES}"
            )
        for field in ("dropout_rate", "attention_dropout_rate"):
            rate = getattr(self, field)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{MODEL}: `{field}` must be in [0, 1), got {rate}")
        for size, field in zip(self._sizes(), ("encoder_size", "decoder_size")):
            if self.posemb == "sincos2d" and size.width % 4:
                raise ValueError(
                    f"{MODEL}: posemb='sincos2d' needs the width of `{field}` divisible by 4, "
                    f"got {size.width}"
                )

    # -- the networks ------------------------------------------------------------------------
    def _stack_fields(self) -> dict:
        """The fields the encoder and decoder share with this model."""
        return {name: getattr(self, name) for name in (
            "patch_size", "posemb", "feed_forward", "dropout_rate", "attention_dropout_rate",
            "remat", "dtype", "param_dtype")}

    def make_encoder(self, latent_channels: int) -> ViTEncoder:
        return ViTEncoder(size=self._sizes()[0], latent_dim=latent_channels,
                          **self._stack_fields())

    def make_decoder(self) -> ViTDecoder:
        return ViTDecoder(size=self._sizes()[1], out_channels=self.output_channels,
                          **self._stack_fields())


def create(preset: str = "B", **overrides) -> ViTVQGAN:
    """A ViTVQGAN from a preset name in PRESETS ("tiny", "S", "B", "L", "SL"), fields overridden."""
    return ViTVQGAN.from_preset(PRESETS, preset, **overrides)
