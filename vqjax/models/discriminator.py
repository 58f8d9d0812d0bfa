"""Image discriminators for tokenizer training: StyleGAN2-style (ViT-VQGAN, MaskGIT) and PatchGAN.

    disc = StyleGANDiscriminator(filters=128, channel_multipliers=(2, 4, 4, 4, 4))
    variables = disc.init(rng, images)            # images: [B, H, W, 3] in [-1, 1]
    logits = disc.apply(variables, images)        # [B] float32

StyleGAN2 residual discriminator (Karras et al. 2020, "resnet" D), in the form MaskGIT/MAGVIT use:
a 3x3 stem, one residual block per channel multiplier, each halving the resolution with a
[1, 3, 3, 1] blur-pool, then minibatch stddev, a 3x3 conv and two dense layers to one logit per
image. Leaky ReLU 0.2 throughout; residual sums are scaled by 1/sqrt(2). No normalization layers,
so the network is a pure function of (params, images), as R1 needs. H and W must be divisible by
2**len(channel_multipliers): e.g. 5 blocks at 32..256 px end at 1x1..8x8.

`maskgit_widths(image_size)` gives MaskGIT's released widths (64 -> 512 at 256 px, ending at
4x4); with `mbstd_group_size=0` the network is the release's (`configs/vqgan.py:maskgit`).

PatchGAN (taming's NLayerDiscriminator, Isola et al. 2017): 4x4 stride-2 convs, leaky ReLU 0.2 and
per-patch logits ([B, 30, 30] at 256 px with 3 layers). Normalization: taming uses BatchNorm, whose
running statistics make the train step stateful (`mutable=["batch_stats"]`, and R1 cannot be taken
through a batch-statistics update); `norm="group"` (default) is the stateless alternative with the
same parameter count, `norm="batch"` is there for parity with taming checkpoints.

Both take `dtype` (compute) and `param_dtype`: bf16 compute with float32 params works; the logits
are returned in float32, and the minibatch statistics are computed in float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqjax.models import layers

Array = jax.Array

LEAKY_SLOPE = 0.2
BLUR_FILTER = (1.0, 3.0, 3.0, 1.0)


def leaky_relu(x: Array) -> Array:
    return jax.nn.leaky_relu(x, negative_slope=LEAKY_SLOPE)


def blur_downsample(x: Array, taps: tuple[float, ...] = BLUR_FILTER) -> Array:
    """Anti-aliased 2x downsampling: the [1,3,3,1] x [1,3,3,1] / 64 blur with stride 2.

    Zero padding of 1 on each side (StyleGAN2's pad for a 4-tap filter and factor 2), so
    [B, H, W, C] -> [B, H/2, W/2, C] for even H, W.

    Written as two separable passes of strided slices (out[i] = sum_a t[a] xpad[2i + a]), which
    XLA fuses into elementwise loops. It equals the depthwise `conv_general_dilated` with
    `feature_group_count=C` to float rounding, but that grouped convolution's gradient is slow on
    XLA:CPU: the tiny discriminator's gradient took 64 ms with it and 9 ms with the slices
    (bench.train_step, docs/benchmarks.md).
    """
    weights = np.asarray(taps, np.float64) / np.sum(taps)
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"blur_downsample: x must be [B, H, W, C] with even H and W, got "
                         f"{x.shape}")
    pad_lo, pad_hi = (len(taps) - 2) // 2, (len(taps) - 1) // 2
    x = jnp.pad(x, ((0, 0), (pad_lo, pad_hi), (pad_lo, pad_hi), (0, 0)))

    def one_axis(y, axis):
        size = (y.shape[axis] - len(taps)) // 2 + 1
        terms = [jax.lax.slice_in_dim(y, a, a + 2 * size - 1, stride=2, axis=axis) * float(w)
                 for a, w in enumerate(weights)]
        return sum(terms[1:], terms[0])

    return one_axis(one_axis(x, 1), 2).astype(x.dtype)


def minibatch_stddev(x: Array, group_size: int = 4, num_features: int = 1) -> Array:
    """Append `num_features` channels holding the stddev across a group of samples (StyleGAN).

    The batch is split into groups of G = the largest divisor of B that is <= group_size, sample i
    being grouped with i + B/G, i + 2B/G, ... (StyleGAN's layout). For each group and feature
    slice: stddev over the group, averaged over H, W and the slice's channels. Float32 inside.
    [B, H, W, C] -> [B, H, W, C + num_features].
    """
    batch, height, width, channels = x.shape
    if channels % num_features:
        raise ValueError(f"minibatch_stddev: {channels} channels not divisible by {num_features}")
    group = max(g for g in range(1, min(group_size, batch) + 1) if batch % g == 0)
    y = x.astype(jnp.float32).reshape(
        group, batch // group, height, width, num_features, channels // num_features
    )
    y = y - jnp.mean(y, axis=0)
    stddev = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)  # [B/G, H, W, F, C/F]
    stddev = jnp.mean(stddev, axis=(1, 2, 4))  # [B/G, F]
    stddev = jnp.broadcast_to(
        stddev[None, :, None, None, :], (group, batch // group, height, width, num_features)
    ).reshape(batch, height, width, num_features)
    return jnp.concatenate([x, stddev.astype(x.dtype)], axis=-1)


class StyleGANResBlock(nn.Module):
    """conv3x3, lrelu, blur-pool, conv3x3, lrelu; skip: blur-pool, conv1x1; sum / sqrt(2)."""

    filters: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        def conv(features, size, name, use_bias=True):
            return nn.Conv(features, (size, size), use_bias=use_bias, name=name,
                           kernel_init=nn.initializers.xavier_uniform(),
                           conv_general_dilated=layers.conv_general_dilated,
                           dtype=self.dtype, param_dtype=self.param_dtype)

        residual = x
        x = leaky_relu(conv(x.shape[-1], 3, "conv_0")(x))
        x = blur_downsample(x)  # [B, H/2, W/2, C_in]
        x = leaky_relu(conv(self.filters, 3, "conv_1")(x))
        residual = conv(self.filters, 1, "skip", use_bias=False)(blur_downsample(residual))
        return (x + residual) / math.sqrt(2.0)


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2 residual discriminator: images [B, H, W, C] -> logits [B] (float32).

    `filters` * `channel_multipliers[i]` channels after block i; each block halves H and W.
    `mbstd_group_size=0` drops the minibatch-stddev layer (then samples are independent).
    """

    filters: int = 128
    channel_multipliers: tuple[int, ...] = (2, 4, 4, 4, 4)
    mbstd_group_size: int = 4
    mbstd_num_features: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array) -> Array:
        factor = 2 ** len(self.channel_multipliers)
        if images.ndim != 4 or images.shape[1] % factor or images.shape[2] % factor:
            raise ValueError(
                f"StyleGANDiscriminator: images must be [B, H, W, C] with H, W divisible by "
                f"{factor} (= 2**{len(self.channel_multipliers)} blocks), got {images.shape}"
            )
        dense_init = nn.initializers.xavier_uniform()
        options = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=dense_init)
        conv_options = dict(options, conv_general_dilated=layers.conv_general_dilated)
        x = images.astype(self.dtype)
        x = leaky_relu(nn.Conv(self.filters, (3, 3), name="stem", **conv_options)(x))
        filters = self.filters
        for i, multiplier in enumerate(self.channel_multipliers):
            filters = int(self.filters * multiplier)
            x = StyleGANResBlock(filters, self.dtype, self.param_dtype, name=f"block_{i}")(x)
        if self.mbstd_group_size > 0:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_features)
        x = leaky_relu(nn.Conv(filters, (3, 3), name="final_conv", **conv_options)(x))
        x = x.reshape(x.shape[0], -1)  # [B, h * w * C]
        x = leaky_relu(nn.Dense(filters, name="final_dense", **options)(x))
        logits = nn.Dense(1, name="logits", **options)(x)  # [B, 1]
        return logits[:, 0].astype(jnp.float32)


def maskgit_widths(image_size: int, channel_multiplier: int = 1) -> tuple[int, tuple[int, ...]]:
    """(filters, channel_multipliers) of MaskGIT's released discriminator (maskgit/nets/
    discriminator.py) at `image_size`: its width table {4..32: 512, 64: 256, 128: 128, 256: 64,
    512: 32, 1024: 16} (x `channel_multiplier` from 64 px up), a stem at the input's width and one
    block per halving down to 4x4 (64 -> 128, 256, 512, 512, 512, 512 at 256 px). Use with
    `mbstd_group_size=0`: the release has no minibatch-stddev layer."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier,
             128: 128 * channel_multiplier, 256: 64 * channel_multiplier,
             512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
    if image_size not in table or image_size < 8:
        raise ValueError(f"maskgit_widths: image_size must be a power of two in 8..1024 (the "
                         f"release's table), got {image_size}")
    stem = table[image_size]
    sizes = [2 ** (i - 1) for i in range(int(math.log2(image_size)), 2, -1)]  # block outputs
    multipliers = []
    for size in sizes:
        if table[size] % stem:
            raise ValueError(f"maskgit_widths: width {table[size]} is not a multiple of the stem's "
                             f"{stem} (channel_multiplier={channel_multiplier})")
        multipliers.append(table[size] // stem)
    return stem, tuple(multipliers)


def _normal(mean: float, stddev: float):
    def init(key, shape, dtype=jnp.float32):
        return mean + stddev * jax.random.normal(key, shape, dtype)

    return init


class PatchGANDiscriminator(nn.Module):
    """taming's NLayerDiscriminator: images [B, H, W, C] -> per-patch logits [B, h, w] (float32).

    Layers: conv4x4/2 (bias) + lrelu; `num_layers - 1` x [conv4x4/2 + norm + lrelu] with channels
    filters * min(2**n, 8); conv4x4/1 + norm + lrelu; conv4x4/1 to 1 channel. Convs followed by a
    norm have no bias. Init as taming: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0.
    `norm`: "group" (GroupNorm, `num_groups`, stateless), "batch" (taming's BatchNorm; pass
    `train=True` and `mutable=["batch_stats"]` when training) or "none".
    """

    filters: int = 64
    num_layers: int = 3
    norm: str = "group"
    num_groups: int = 32
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _norm(self, channels: int, train: bool, name: str):
        options = dict(dtype=self.dtype, param_dtype=self.param_dtype,
                       scale_init=_normal(1.0, 0.02), bias_init=nn.initializers.zeros, name=name)
        if self.norm == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                **options)
        if self.norm == "group":
            groups = math.gcd(self.num_groups, channels)
            return nn.GroupNorm(num_groups=groups, epsilon=1e-5, **options)
        return lambda x: x

    @nn.compact
    def __call__(self, images: Array, train: bool = False) -> Array:
        if self.norm not in ("group", "batch", "none"):
            raise ValueError(f"PatchGANDiscriminator: norm must be group, batch or none, "
                             f"got {self.norm!r}")
        if images.ndim != 4:
            raise ValueError(
                f"PatchGANDiscriminator: images must be [B, H, W, C], got {images.shape}"
            )
        use_norm = self.norm != "none"

        def conv(features, stride, name, use_bias):
            return nn.Conv(features, (4, 4), strides=stride, padding=((1, 1), (1, 1)),
                           use_bias=use_bias, kernel_init=_normal(0.0, 0.02),
                           dtype=self.dtype, param_dtype=self.param_dtype, name=name,
                           conv_general_dilated=layers.conv_general_dilated)

        x = images.astype(self.dtype)
        x = leaky_relu(conv(self.filters, 2, "conv_0", use_bias=True)(x))  # [B, H/2, W/2, F]
        for n in range(1, self.num_layers + 1):
            stride = 2 if n < self.num_layers else 1
            channels = self.filters * min(2**n, 8)
            x = conv(channels, stride, f"conv_{n}", use_bias=not use_norm)(x)
            x = leaky_relu(self._norm(channels, train, f"norm_{n}")(x))
        logits = conv(1, 1, "logits", use_bias=True)(x)  # [B, h, w, 1]
        return logits[..., 0].astype(jnp.float32)
