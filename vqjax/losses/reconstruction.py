"""Pixel reconstruction losses: L2, L1 and the logit-Laplace likelihood.

Images are float [B, H, W, 3] in [-1, 1]. Every loss is computed in float32 (bf16 decoders included)
and averaged over every element, so a weight means the same thing at any resolution.

Logit-Laplace (DALL-E, Ramesh et al. 2021, Sec. A.3; used as an optional term by ViT-VQGAN). The
decoder predicts, per pixel and channel, a location `mu` and a log-scale `log_b`; a pixel value
x in (0, 1) has density

    p(x | mu, b) = 1 / (2 b x (1 - x)) * exp(-|logit(x) - mu| / b)

To keep logit(x) bounded, pixels are first squeezed into (eps, 1 - eps) with eps = 0.1 (DALL-E's):

    u  = (x + 1) / 2                    # [-1, 1] -> [0, 1]
    x' = (1 - 2 eps) * u + eps          # [0, 1]  -> [eps, 1 - eps]

and the loss is the full negative log-likelihood of x' (constants included, so it is a true NLL):

    nll = |logit(x') - mu| / b + log(b) + log(2) + log(x') + log(1 - x')

Back to pixels (DALL-E's `unmap_pixels`): the predicted image is the median of the distribution,
sigmoid(mu), mapped back with the inverse squeeze and clipped, then rescaled to [-1, 1]:

    pixels = 2 * clip((sigmoid(mu) - eps) / (1 - 2 eps), 0, 1) - 1

The decoder's output for this loss has 2C channels: [..., :C] is mu, [..., C:] is log b.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

Array = jax.Array

LOGIT_LAPLACE_EPS = 0.1  # DALL-E's squeeze of [0, 1] into [eps, 1 - eps]


def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


def l2_loss(reconstructions: Array, images: Array) -> Array:
    """Mean squared error over every element (float32 scalar)."""
    return jnp.mean(jnp.square(_f32(reconstructions) - _f32(images)))


def l1_loss(reconstructions: Array, images: Array) -> Array:
    """Mean absolute error over every element (float32 scalar)."""
    return jnp.mean(jnp.abs(_f32(reconstructions) - _f32(images)))


# -- logit-Laplace ---------------------------------------------------------------------------------


def map_pixels(images: Array, eps: float = LOGIT_LAPLACE_EPS) -> Array:
    """Images in [-1, 1] -> values in [eps, 1 - eps] (float32), the support the NLL is taken on."""
    unit = jnp.clip((_f32(images) + 1.0) / 2.0, 0.0, 1.0)
    return (1.0 - 2.0 * eps) * unit + eps


def unmap_pixels(values: Array, eps: float = LOGIT_LAPLACE_EPS) -> Array:
    """Inverse of `map_pixels`: values in (0, 1) -> images in [-1, 1] (clipped)."""
    unit = jnp.clip((_f32(values) - eps) / (1.0 - 2.0 * eps), 0.0, 1.0)
    return 2.0 * unit - 1.0


def split_logit_laplace(predictions: Array) -> tuple[Array, Array]:
    """Decoder output [..., 2C] -> (mu [..., C], log_b [..., C])."""
    channels = predictions.shape[-1]
    if channels % 2:
        raise ValueError(
            f"logit-Laplace predictions need an even channel count (mu, log_b), got {channels}"
        )
    return predictions[..., : channels // 2], predictions[..., channels // 2 :]


def logit_laplace_nll(
    mu: Array, log_b: Array, images: Array, eps: float = LOGIT_LAPLACE_EPS
) -> Array:
    """Per-element negative log-likelihood (float32, images' shape) of `images` in [-1, 1]."""
    x = map_pixels(images, eps)  # [B, H, W, C] in [eps, 1 - eps]
    mu, log_b = _f32(mu), _f32(log_b)
    log_x, log_1mx = jnp.log(x), jnp.log1p(-x)
    logit_x = log_x - log_1mx
    return jnp.abs(logit_x - mu) * jnp.exp(-log_b) + log_b + math.log(2.0) + log_x + log_1mx


def logit_laplace_loss(
    predictions: Array, images: Array, eps: float = LOGIT_LAPLACE_EPS
) -> Array:
    """Mean logit-Laplace NLL of `images` [B, H, W, C] under `predictions` [B, H, W, 2C]."""
    mu, log_b = split_logit_laplace(predictions)
    if mu.shape != images.shape:
        raise ValueError(
            f"logit-Laplace predictions {predictions.shape} give mu {mu.shape}, "
            f"but images are {images.shape}"
        )
    return jnp.mean(logit_laplace_nll(mu, log_b, images, eps))


def logit_laplace_to_pixels(predictions: Array, eps: float = LOGIT_LAPLACE_EPS) -> Array:
    """Decoder output [..., 2C] -> image [..., C] in [-1, 1]: the median sigmoid(mu), unmapped."""
    mu, _ = split_logit_laplace(predictions)
    return unmap_pixels(jax.nn.sigmoid(_f32(mu)), eps)
