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

from vqjax import quantizers
from vqjax.models import layers
from vqjax.quantizers.base import Quantizer, QuantizerOutput
from vqjax.quantizers.linen import QuantizerModule

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
    if options is not None:
        return dict(options)
    return dict(DEFAULT_VQ_OPTIONS) if quantizer == "vq" else {}


class ViTEncoder(nn.Module):
    """Images [B, H, W, C] -> latents [B, H/p, W/p, latent_dim]."""

    size: ViTSize
    patch_size: int
    latent_dim: int
    posemb: str = "learned"
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array, deterministic: bool = True) -> Array:
        p = self.patch_size
        grid = (images.shape[1] // p, images.shape[2] // p)
        tokens = layers.patchify(images.astype(self.dtype), p)  # [B, h*w, p*p*C]
        tokens = nn.Dense(
            self.size.width, dtype=self.dtype, param_dtype=self.param_dtype, name="patch_embedding"
        )(tokens)  # [B, h*w, width]
        tokens = layers.PositionEmbedding2D(
            self.posemb, self.dtype, self.param_dtype, name="position_embedding"
        )(tokens, grid)
        tokens = nn.Dropout(self.dropout_rate)(tokens, deterministic=deterministic)
        tokens = self._transformer()(tokens, deterministic)
        latents = layers.TanhHead(
            self.size.width, self.latent_dim, self.dtype, self.param_dtype, name="head"
        )(tokens)  # [B, h*w, latent_dim]
        return einops.rearrange(latents, "b (h w) d -> b h w d", h=grid[0], w=grid[1])

    def _transformer(self):
        return layers.Transformer(
            num_layers=self.size.num_layers,
            num_heads=self.size.num_heads,
            mlp_dim=self.size.mlp_dim,
            feed_forward=self.feed_forward,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            remat=self.remat,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="transformer",
        )


class ViTDecoder(ViTEncoder):
    """Codes [B, h, w, D] -> images [B, h*p, w*p, out_channels], float32 (`latent_dim` unused)."""

    latent_dim: int = 0
    out_channels: int = 3

    @nn.compact
    def __call__(self, codes: Array, deterministic: bool = True) -> Array:
        p = self.patch_size
        grid = (codes.shape[1], codes.shape[2])
        tokens = einops.rearrange(codes.astype(self.dtype), "b h w d -> b (h w) d")
        tokens = nn.Dense(
            self.size.width, dtype=self.dtype, param_dtype=self.param_dtype, name="code_embedding"
        )(tokens)  # [B, h*w, width]
        tokens = layers.PositionEmbedding2D(
            self.posemb, self.dtype, self.param_dtype, name="position_embedding"
        )(tokens, grid)
        tokens = nn.Dropout(self.dropout_rate)(tokens, deterministic=deterministic)
        tokens = self._transformer()(tokens, deterministic)
        patches = layers.TanhHead(
            self.size.width, p * p * self.out_channels, self.dtype, self.param_dtype, name="head"
        )(tokens)  # [B, h*w, p*p*out_channels]
        return layers.unpatchify(patches, grid, p).astype(jnp.float32)


class ViTVQGAN(nn.Module):
    """ViT encoder -> quantizer (any, by name) -> ViT decoder. See the module docstring.

    Fields: `encoder_size`/`decoder_size` (a name in SIZES, a ViTSize or a 4-tuple; decoder None =
    same as encoder), `patch_size`, `posemb` ("learned" | "sincos2d"), `feed_forward` ("mlp" |
    "geglu" | "swiglu"), `dropout_rate`, `attention_dropout_rate`, `quantizer` (a name or a built
    Quantizer) with `quantizer_options` (None: the paper's vq options for "vq", none otherwise),
    `latent_dim` (None: what the quantizer needs, else the encoder width), `logit_laplace`
    (decoder emits mu and log-scale: 6 channels), `channels`, `remat`, `dtype`, `param_dtype`.

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
    quantizer: Any = "vq"
    quantizer_options: Any = None
    latent_dim: int | None = None
    logit_laplace: bool = False
    channels: int = 3
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    # -- configuration, usable on an unbound model -------------------------------------------
    def built_quantizer(self) -> Quantizer:
        if isinstance(self.quantizer, Quantizer):
            return self.quantizer
        return quantizers.build(
            self.quantizer, **quantizer_options_for(self.quantizer, self.quantizer_options)
        )

    @property
    def latent_channels(self) -> int:
        """Channels the encoder hands the quantizer (decided by the quantizer when it can)."""
        width = resolve_size(self.encoder_size, "encoder_size").width
        return layers.quantizer_latent_dim(
            self.built_quantizer(), self.latent_dim, width, "latent_dim"
        )

    @property
    def output_channels(self) -> int:
        return 2 * self.channels if self.logit_laplace else self.channels

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def _check_fields(self):
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

    def setup(self):
        self._check_fields()
        encoder_size = resolve_size(self.encoder_size, "encoder_size")
        decoder_size = resolve_size(
            self.encoder_size if self.decoder_size is None else self.decoder_size, "decoder_size"
        )
        for size, field in ((encoder_size, "encoder_size"), (decoder_size, "decoder_size")):
            if self.posemb == "sincos2d" and size.width % 4:
                raise ValueError(
                    f"{MODEL}: posemb='sincos2d' needs the width of `{field}` divisible by 4, "
                    f"got {size.width}"
                )
        quantizer = self.built_quantizer()
        latent_dim = layers.quantizer_latent_dim(
            quantizer, self.latent_dim, encoder_size.width, "latent_dim"
        )
        common = dict(
            patch_size=self.patch_size,
            posemb=self.posemb,
            feed_forward=self.feed_forward,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            remat=self.remat,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.encoder = ViTEncoder(size=encoder_size, latent_dim=latent_dim, **common)
        self.quantize = QuantizerModule(quantizer)
        self.decoder = ViTDecoder(size=decoder_size, out_channels=self.output_channels, **common)

    # -- the tokenizer interface ------------------------------------------------------------
    def encode(self, images: Array, train: bool = False) -> tuple[Array, Array, QuantizerOutput]:
        """Images [B, H, W, 3] in [-1, 1] -> (z_q [B, h, w, D] float32, indices [B, h, w], aux)."""
        layers.check_images(MODEL, images, self.channels)
        layers.check_divisible(
            MODEL, images.shape, self.patch_size, "patch_size", f"patch_size={self.patch_size}"
        )
        latents = self.encoder(images, deterministic=not train)  # [B, h, w, D]
        # Quantize in float32 whatever the compute dtype (bf16 rounding loses codes).
        z_q, aux = self.quantize(latents.astype(jnp.float32), train=train)
        return z_q, aux.indices, aux

    def decode(self, z_q: Array, train: bool = False) -> Array:
        """Codes [B, h, w, D] -> images [B, h*p, w*p, 3] (6 with logit_laplace), float32."""
        if getattr(z_q, "ndim", None) != 4:
            raise ValueError(
                f"{MODEL}: decode expects codes [B, h, w, D], got shape "
                f"{getattr(z_q, 'shape', None)}"
            )
        return self.decoder(z_q, deterministic=not train)

    def decode_indices(self, indices: Array) -> Array:
        """Token indices [B, h, w] (+ the quantizer's index axes) -> images, via the codebook."""
        return self.decode(self.quantize.decode(indices))

    def __call__(self, images: Array, train: bool = False) -> tuple[Array, QuantizerOutput]:
        """Images -> (reconstruction [B, H, W, 3 or 6] float32, QuantizerOutput)."""
        z_q, _, aux = self.encode(images, train=train)
        return self.decode(z_q, train=train), aux


def create(preset: str = "B", **overrides) -> ViTVQGAN:
    """A ViTVQGAN from a preset name in PRESETS ("tiny", "S", "B", "L", "SL"), fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"{MODEL}: unknown preset {preset!r}; choose one of {list(PRESETS)}")
    return ViTVQGAN(**{**PRESETS[preset], **overrides})
