"""The tokenizer base: what every image tokenizer shares, so that a new one defines only its networks.

    class MyTokenizer(Tokenizer):              # fields of its own, all with defaults
        model_name = "my_tokenizer"            # names the model in error messages
        default_vq_options = {...}             # the "vq" quantizer's options when none are given
        latent_field = "latent_dim"            # its field that asks for a latent width (or None)
        def default_latent_channels(self): ... # that width when neither field nor quantizer decides
        downsampling_factor = property(...)    # pixels per token along a side
        def make_encoder(self, latent_channels): ...  # images [B, H, W, C] -> [B, h, w, latent]
        def make_decoder(self): ...                    # codes [B, h, w, D] -> images

The base builds the quantizer (any `vqjax.quantizers` name, or a built Quantizer), works out how
many channels the encoder hands it (`layers.quantizer_latent_dim`), and holds the tokenizer
interface every trainer, evaluator and `vqjax.load` uses:

    reconstruction, aux = model.apply(variables, images)                 # aux: QuantizerOutput
    z_q, indices, aux = model.apply(variables, images, method=model.encode)
    images = model.apply(variables, z_q, method=model.decode)
    images = model.apply(variables, indices, method=model.decode_indices)

Sub-modules are named `encoder`, `quantize` and `decoder`, plus `quant_conv` / `post_quant_conv`
when the tokenizer has projections around the quantizer (`make_quant_conv` / `make_post_quant_conv`,
taming's): parameter paths, and so checkpoints and the converters of released models, rely on them.
Encoders and decoders are called as `encoder(images, train)` and `decoder(codes, train)`.

Also here, the pure helpers used inside jitted code (trainers, evaluators, `vqjax.load`'s handles):
`encode_indices`, `decode_indices` and `reconstruct_images`, which map logit-Laplace outputs to
pixels and clip to [-1, 1].
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqjax import quantizers
from vqjax.models import layers
from vqjax.quantizers.base import Quantizer, QuantizerOutput
from vqjax.quantizers.linen import QuantizerModule

Array = jax.Array


def quantizer_options_for(quantizer, options, default_vq_options) -> dict:
    """`options` as a dict; None means `default_vq_options` for "vq" and none for other names."""
    if options is not None:
        return dict(options)
    return dict(default_vq_options) if quantizer == "vq" else {}


class Tokenizer(nn.Module):
    """Encoder -> (quant_conv) -> quantizer -> (post_quant_conv) -> decoder. Abstract: see the module
    docstring for the hooks a tokenizer defines.

    Fields shared by every tokenizer (they come first in the dataclass, before the tokenizer's own):
    `quantizer` (a `vqjax.quantizers` name or a built Quantizer), `quantizer_options` (a mapping or
    tuple of pairs; None: `default_vq_options` for "vq", none otherwise), `channels` (image
    channels), `dtype` (compute dtype), `param_dtype`.

    A stochastic quantizer needs `rngs={"quantizer": ...}`; a stateful one
    `mutable=["quantizer_state"]` when training.
    """

    quantizer: Any = "vq"
    quantizer_options: Any = None
    channels: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    # Class attributes (not dataclass fields: no annotations), set by each tokenizer.
    model_name = "tokenizer"  # names the model in error messages
    default_vq_options = {}  # the "vq" quantizer's options when `quantizer_options` is None
    latent_field = None  # the name of the field asking for a latent width (None: no such field)

    # -- hooks a tokenizer defines --------------------------------------------------------------
    @property
    def downsampling_factor(self) -> int:
        """Pixels per token along a side."""
        raise NotImplementedError

    def divisibility_hint(self) -> tuple[str, str]:
        """(field, what it means) named when an image size does not divide by the factor."""
        raise NotImplementedError

    def default_latent_channels(self) -> int:
        """The latent width when neither `latent_field` nor the quantizer decides it."""
        raise NotImplementedError

    def check_fields(self) -> None:
        """Raise a ValueError naming any bad field (called first in `setup`)."""

    def make_encoder(self, latent_channels: int) -> nn.Module:
        """images [B, H, W, channels] -> latents [B, h, w, latent_channels] (or the width
        `make_quant_conv` takes)."""
        raise NotImplementedError

    def make_decoder(self) -> nn.Module:
        """Codes [B, h, w, D] (or `make_post_quant_conv`'s output) -> images, float32."""
        raise NotImplementedError

    def make_quant_conv(self, latent_channels: int) -> nn.Module | None:
        """The projection between encoder and quantizer, if any."""
        return None

    def make_post_quant_conv(self) -> nn.Module | None:
        """The projection between quantizer and decoder, if any."""
        return None

    # -- configuration, usable on an unbound model ---------------------------------------------
    def built_quantizer(self) -> Quantizer:
        if isinstance(self.quantizer, Quantizer):
            return self.quantizer
        return quantizers.build(self.quantizer, **quantizer_options_for(
            self.quantizer, self.quantizer_options, self.default_vq_options))

    def _latent_channels(self, quantizer: Quantizer) -> int:
        requested = None if self.latent_field is None else getattr(self, self.latent_field)
        return layers.quantizer_latent_dim(
            quantizer, requested, self.default_latent_channels(), self.latent_field or "")

    @property
    def latent_channels(self) -> int:
        """Channels handed to the quantizer (decided by the quantizer when it can)."""
        return self._latent_channels(self.built_quantizer())

    @property
    def output_channels(self) -> int:
        """Channels of the decoder's output."""
        return self.channels

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        factor = self.downsampling_factor
        return height // factor, width // factor

    @classmethod
    def from_preset(cls, presets: dict, preset: str, **overrides):
        """`cls` with the fields of `presets[preset]`, overridden by `overrides`."""
        if preset not in presets:
            raise ValueError(
                f"{cls.model_name}: unknown preset {preset!r}; choose one of {list(presets)}")
        return cls(**{**presets[preset], **overrides})

    def setup(self):
        self.check_fields()
        quantizer = self.built_quantizer()
        latent_channels = self._latent_channels(quantizer)
        self.encoder = self.make_encoder(latent_channels)
        self.quant_conv = self.make_quant_conv(latent_channels)
        self.quantize = QuantizerModule(quantizer)
        self.post_quant_conv = self.make_post_quant_conv()
        self.decoder = self.make_decoder()

    # -- the tokenizer interface ---------------------------------------------------------------
    def encode(self, images: Array, train: bool = False) -> tuple[Array, Array, QuantizerOutput]:
        """Images [B, H, W, C] in [-1, 1] -> (z_q [B, h, w, D] float32, indices [B, h, w], aux)."""
        layers.check_images(self.model_name, images, self.channels)
        layers.check_divisible(self.model_name, images.shape, self.downsampling_factor,
                               *self.divisibility_hint())
        latents = self.encoder(images, train)  # [B, h, w, D]
        if self.quant_conv is not None:
            latents = self.quant_conv(latents)
        # Quantize in float32 whatever the compute dtype (bf16 rounding loses codes).
        z_q, aux = self.quantize(latents.astype(jnp.float32), train=train)
        return z_q, aux.indices, aux

    def decode(self, z_q: Array, train: bool = False) -> Array:
        """Codes [B, h, w, D] -> images [B, h*f, w*f, output_channels], float32."""
        if getattr(z_q, "ndim", None) != 4:
            raise ValueError(
                f"{self.model_name}: decode expects codes [B, h, w, D], got shape "
                f"{getattr(z_q, 'shape', None)}"
            )
        if self.post_quant_conv is not None:
            z_q = self.post_quant_conv(z_q.astype(self.dtype))
        return self.decoder(z_q, train)

    def decode_indices(self, indices: Array) -> Array:
        """Token indices [B, h, w] (+ the quantizer's index axes) -> images, via the codebook."""
        return self.decode(self.quantize.decode(indices))

    def __call__(self, images: Array, train: bool = False) -> tuple[Array, QuantizerOutput]:
        """Images -> (reconstruction [B, H, W, output_channels] float32, QuantizerOutput)."""
        z_q, _, aux = self.encode(images, train=train)
        return self.decode(z_q, train=train), aux


class LevelsTokenizer(Tokenizer):
    """A conv tokenizer whose `channel_multipliers` (one per level) set its downsampling by
    2^(levels - 1), every level's `filters * multiplier` channels split into `norm_groups`."""

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    def divisibility_hint(self) -> tuple[str, str]:
        return ("channel_multipliers", "the downsampling factor 2^(len(channel_multipliers)-1) = "
                f"{self.downsampling_factor}")

    def check_fields(self) -> None:
        """`channel_multipliers`, then the tokenizer's own `check_network_fields`, then that every
        level's channels split into `norm_groups`."""
        multipliers = tuple(self.channel_multipliers)
        if not multipliers or any(int(m) < 1 for m in multipliers):
            raise ValueError(
                f"{self.model_name}: `channel_multipliers` must be a non-empty sequence of ints "
                f">= 1, got {self.channel_multipliers}"
            )
        self.check_network_fields()
        for multiplier in multipliers:
            if (self.filters * multiplier) % self.norm_groups:
                raise ValueError(
                    f"{self.model_name}: `norm_groups`={self.norm_groups} does not divide the "
                    f"{self.filters * multiplier} channels of a level (`filters`={self.filters} x "
                    f"`channel_multipliers` entry {multiplier})"
                )
        self.check_other_fields()

    def check_network_fields(self) -> None:
        """Raise a ValueError naming a bad size field (before the norm_groups check)."""

    def check_other_fields(self) -> None:
        """Raise a ValueError naming any other bad field (after the norm_groups check)."""


# ------------------------------------------------------------------------------------------------
# Pure helpers (used inside the trainers' and evaluators' jitted code, and by vqjax.load)
# ------------------------------------------------------------------------------------------------
def _to_pixels(outputs: Array, logit_laplace_eps: float | None) -> Array:
    """Decoder outputs -> images in [-1, 1] float32 (6 channels: logit-Laplace mu, log-scale)."""
    if outputs.shape[-1] == 6:
        from vqjax.losses import reconstruction

        eps = reconstruction.LOGIT_LAPLACE_EPS if logit_laplace_eps is None else logit_laplace_eps
        outputs = reconstruction.logit_laplace_to_pixels(outputs, eps)
    return jnp.clip(outputs.astype(jnp.float32), -1.0, 1.0)


def encode_indices(tokenizer_model, variables, images) -> jax.Array:
    """Images [B, H, W, 3] in [-1, 1] -> token indices int32 [B, h, w(, Q)] (no gradient)."""
    _, indices, _ = tokenizer_model.apply(variables, images, train=False,
                                          method=tokenizer_model.encode)
    return jax.lax.stop_gradient(indices).astype(jnp.int32)


def decode_indices(tokenizer_model, variables, tokens,
                   logit_laplace_eps: float | None = None) -> jax.Array:
    """Token indices -> images in [-1, 1] float32 (logit-laplace outputs mapped to pixels)."""
    images = tokenizer_model.apply(variables, tokens, method=tokenizer_model.decode_indices)
    return _to_pixels(images, logit_laplace_eps)


def reconstruct_images(tokenizer_model, variables, images,
                       logit_laplace_eps: float | None = None) -> tuple[jax.Array, jax.Array]:
    """(reconstructions in [-1, 1] float32, indices) of images [B, H, W, 3] in [-1, 1]: the
    model's own forward pass (decoder on the quantized latents), as in training."""
    outputs, aux = tokenizer_model.apply(variables, images, train=False)
    return _to_pixels(outputs, logit_laplace_eps), aux.indices.astype(jnp.int32)
