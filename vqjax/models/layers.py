"""Layers shared by the tokenizers: transformer blocks, 2D position embeddings, patches, convs.

Every module takes `dtype` (the compute dtype, e.g. `jnp.bfloat16`) and `param_dtype` (the storage
dtype of its parameters, float32 by default), so a model trains in bf16 with float32 master weights.
Normalization statistics and softmax run in float32 whatever the compute dtype.

Also here: `quantizer_latent_dim`, the rule by which a tokenizer learns from its quantizer how many
channels to hand it, so that changing the quantizer's name in a config is the only change needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Dtype = Any

FEED_FORWARD_TYPES = ("mlp", "geglu", "swiglu")
POSEMB_TYPES = ("learned", "sincos2d")


# -- transformer sizes -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TransformerSize:
    """Shape of one transformer stack."""

    num_layers: int
    width: int
    num_heads: int
    mlp_dim: int


def resolve_transformer_size(model: str, size, sizes: Mapping[str, TransformerSize],
                             field: str) -> TransformerSize:
    """A name in `sizes`, a TransformerSize, or a 4-tuple / mapping of its fields; checked."""
    if isinstance(size, TransformerSize):
        resolved = size
    elif isinstance(size, str):
        if size not in sizes:
            raise ValueError(f"{model}: unknown `{field}` {size!r}; choose one of {list(sizes)}")
        resolved = sizes[size]
    elif isinstance(size, Mapping):
        resolved = TransformerSize(**dict(size))
    elif isinstance(size, Sequence) and len(size) == 4:
        resolved = TransformerSize(*map(int, size))
    else:
        raise ValueError(
            f"{model}: `{field}` must be a size name {list(sizes)}, a TransformerSize or a "
            f"(num_layers, width, num_heads, mlp_dim) tuple; got {size!r}"
        )
    if min(resolved.num_layers, resolved.width, resolved.num_heads, resolved.mlp_dim) < 1:
        raise ValueError(f"{model}: every entry of `{field}` must be >= 1, got {resolved}")
    if resolved.width % resolved.num_heads:
        raise ValueError(
            f"{model}: `{field}` width {resolved.width} is not divisible by its num_heads "
            f"{resolved.num_heads}"
        )
    return resolved


# -- input checks ------------------------------------------------------------------------------
def check_images(model: str, images, channels: int = 3) -> None:
    """Raise a ValueError/TypeError naming the problem unless `images` is float [B, H, W, C]."""
    shape = getattr(images, "shape", None)
    if shape is None:
        raise TypeError(
            f"{model}: images must be an array [B, H, W, {channels}], got {type(images)}"
        )
    if len(shape) != 4:
        raise ValueError(
            f"{model}: images must have rank 4 [B, H, W, {channels}], got rank {len(shape)} "
            f"with shape {tuple(shape)}"
        )
    if shape[-1] != channels:
        raise ValueError(
            f"{model}: images must have {channels} channels (last axis, NHWC), got shape "
            f"{tuple(shape)}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"{model}: images must be floating point in [-1, 1], got dtype {images.dtype}"
        )
    check_range(model, images)


RANGE_TOLERANCE = 1e-3


def check_range(model: str, images) -> None:
    """On concrete arrays (e.g. at `model.init` or in eager calls) check the [-1, 1] range; traced
    values inside `jit` cannot be checked without a host round trip and are left alone."""
    try:
        low, high = float(jnp.min(images)), float(jnp.max(images))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return  # traced (inside jit/grad): no host round trip
    if low < -1.0 - RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        hint = " (looks like [0, 255]: use x / 127.5 - 1)" if high > 2.0 else ""
        raise ValueError(
            f"{model}: images must be in [-1, 1], got values in [{low:.4g}, {high:.4g}]{hint}"
        )


def check_divisible(model: str, images_shape, factor: int, field: str, detail: str) -> None:
    height, width = images_shape[1], images_shape[2]
    if height % factor or width % factor:
        raise ValueError(
            f"{model}: image size {height}x{width} is not divisible by {factor} ({detail}); "
            f"resize the images or change `{field}`"
        )


# -- the quantizer's latent dimension ----------------------------------------------------------
def _dim_from_quantizer(quantizer) -> tuple[int | None, str]:
    """(channels the quantizer requires, why) or (None, "") when it accepts any width."""
    latent = getattr(quantizer, "latent_dim", None)
    if isinstance(latent, (int, np.integer)) and not isinstance(latent, bool):
        return int(latent), "its latent_dim"
    if quantizer.name == "fsq" and getattr(quantizer, "levels", None) is not None:
        return len(quantizer.levels), f"levels={tuple(quantizer.levels)}"
    if getattr(quantizer, "dim", None) is not None:
        return int(quantizer.dim), f"dim={quantizer.dim}"
    if quantizer.name in ("lfq", "bsq") and getattr(quantizer, "codebook_size", None):
        bits = math.log2(int(quantizer.codebook_size))
        if bits == int(bits):
            return int(bits), f"codebook_size={quantizer.codebook_size} (one channel per bit)"
    inner = getattr(quantizer, "quantizer", None)  # composites: rvq, grouped
    if inner is not None and hasattr(inner, "name"):
        dim, source = _dim_from_quantizer(inner)
        if dim is not None:
            groups = int(getattr(quantizer, "groups", 1))
            grouping = f" x groups={groups}" if groups > 1 else ""
            return dim * groups, f"inner {inner.name} {source}{grouping}"
    return None, ""


def quantizer_latent_dim(quantizer, requested: int | None, fallback: int, field: str) -> int:
    """How many channels the encoder must produce for `quantizer` (a built Quantizer).

    The quantizer decides when it can: a `latent_dim` attribute if it has one, FSQ's len(levels),
    any quantizer's `dim` option, LFQ/BSQ's log2(codebook_size), a composite's inner quantizer
    (times `groups`). Otherwise the model's own field (`requested`, named `field`) or, when that is
    None, the model's `fallback`. A model field that contradicts the quantizer raises a ValueError
    naming both.
    """
    from_quantizer, source = _dim_from_quantizer(quantizer)
    if from_quantizer is not None:
        if requested is not None and requested != from_quantizer:
            raise ValueError(
                f"`{field}`={requested} but quantizer {quantizer.name!r} needs {from_quantizer} "
                f"channels ({source}); set `{field}`=None to follow the quantizer"
            )
        return from_quantizer
    return int(requested) if requested is not None else int(fallback)


# -- position embeddings -----------------------------------------------------------------------
def posemb_sincos_2d(
    height: int, width: int, features: int, temperature: float = 10_000.0, dtype=jnp.float32
) -> Array:
    """Fixed 2D sine-cosine position embeddings [1, height*width, features] (MAE / big_vision).

    A quarter of the channels each for sin(x), cos(x), sin(y), cos(y), frequencies geometric in
    [1, 1/temperature]. Tokens are in row-major order, as `patchify` produces them.
    """
    if features % 4:
        raise ValueError(
            f"sincos2d position embeddings need `width` divisible by 4, got {features}"
        )
    y, x = np.mgrid[:height, :width]
    quarter = features // 4
    omega = np.arange(quarter, dtype=np.float64) / max(quarter - 1, 1)
    omega = 1.0 / (temperature**omega)
    y = np.einsum("m,d->md", y.reshape(-1).astype(np.float64), omega)
    x = np.einsum("m,d->md", x.reshape(-1).astype(np.float64), omega)
    embedding = np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1)
    return jnp.asarray(embedding[None], dtype)


class PositionEmbedding2D(nn.Module):
    """Adds position embeddings to tokens [B, h*w, D] laid out on an h x w grid.

    `learned`: a parameter [1, h*w, D] sized by the grid seen at init (fixed resolution).
    `sincos2d`: fixed embeddings computed for whatever grid comes in (any resolution).
    """

    kind: str = "learned"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: Array, grid: tuple[int, int]) -> Array:
        height, width = grid
        features = tokens.shape[-1]
        if self.kind == "sincos2d":
            embedding = posemb_sincos_2d(height, width, features)
        elif self.kind == "learned":
            shape = (1, height * width, features)
            if self.has_variable("params", "embedding"):
                stored = self.get_variable("params", "embedding").shape
                if tuple(stored) != shape:
                    raise ValueError(
                        f"learned position embeddings were created for {stored[1]} tokens but the "
                        f"input has a {height}x{width} token grid; learned embeddings fix the "
                        "resolution (use posemb='sincos2d' for any resolution)"
                    )
            embedding = self.param(
                "embedding", nn.initializers.normal(stddev=0.02), shape, self.param_dtype
            )
        else:
            raise ValueError(f"unknown posemb {self.kind!r}; choose one of {POSEMB_TYPES}")
        dtype = self.dtype or tokens.dtype
        return tokens.astype(dtype) + embedding.astype(dtype)


# -- patches -----------------------------------------------------------------------------------
def patchify(images: Array, patch_size: int) -> Array:
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C], patches in row-major order."""
    return einops.rearrange(
        images, "b (h p1) (w p2) c -> b (h w) (p1 p2 c)", p1=patch_size, p2=patch_size
    )


def unpatchify(tokens: Array, grid: tuple[int, int], patch_size: int) -> Array:
    """[B, h*w, p*p*C] -> [B, h*p, w*p, C]; the inverse of `patchify`."""
    return einops.rearrange(
        tokens,
        "b (h w) (p1 p2 c) -> b (h p1) (w p2) c",
        h=grid[0],
        w=grid[1],
        p1=patch_size,
        p2=patch_size,
    )


# -- transformer -------------------------------------------------------------------------------
_dense_init = nn.initializers.xavier_uniform()


class FeedForward(nn.Module):
    """Position-wise feed-forward: `mlp` (Dense-GELU-Dense) or a gated `geglu`/`swiglu` unit.

    Gated units (Shazeer 2020) use two input projections of `hidden_dim` each:
    act(x W_gate) * (x W_up) W_down. They have 50% more weights at equal `hidden_dim`; pass a
    hidden_dim of ~2/3 the MLP's to match its size.
    """

    hidden_dim: int
    kind: str = "mlp"
    dropout_rate: float = 0.0
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_dense_init,
            name=name,
        )
        features = x.shape[-1]
        if self.kind == "mlp":
            h = nn.gelu(dense(self.hidden_dim, "wi")(x))
        elif self.kind in ("geglu", "swiglu"):
            activation = nn.gelu if self.kind == "geglu" else nn.swish
            gate = activation(dense(self.hidden_dim, "wi_gate")(x))
            h = gate * dense(self.hidden_dim, "wi_up")(x)
        else:
            raise ValueError(
                f"unknown feed_forward {self.kind!r}; choose one of {FEED_FORWARD_TYPES}"
            )
        h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return dense(features, "wo")(h)


# -- attention ---------------------------------------------------------------------------------
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


_FORCED_ATTENTION: list[str] = []


@contextlib.contextmanager
def force_attention(implementation: str):
    """Within the block, models built with attention "auto" trace with `implementation` ("xla" or
    "cudnn") instead: for benchmarks and debugging (compare memory and speed of both)."""
    if implementation not in ATTENTION_IMPLEMENTATIONS[1:]:
        raise ValueError(f"force_attention({implementation!r}): choose xla or cudnn")
    _FORCED_ATTENTION.append(implementation)
    try:
        yield
    finally:
        _FORCED_ATTENTION.pop()


def attention_backend(implementation: str, dtype, head_dim: int) -> str:
    """"xla" or "cudnn" for `jax.nn.dot_product_attention`. "auto" picks cuDNN's fused flash
    attention on NVIDIA GPUs where it applies (bf16/fp16, head_dim a multiple of 8 up to 128):
    it never materialises the [B, heads, N, N] scores, which at 512 px with 8 px patches
    (4,096 tokens) dominate a ViT-VQGAN's activation memory. XLA's fused softmax elsewhere."""
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}; choose one of "
                         f"{', '.join(ATTENTION_IMPLEMENTATIONS)}")
    if implementation != "auto":
        return implementation
    if _FORCED_ATTENTION:
        return _FORCED_ATTENTION[-1]
    on_gpu = jax.default_backend() == "gpu"
    fits = jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if on_gpu and fits else "xla"


def dot_product_attention(query: Array, key: Array, value: Array, mask: Array | None = None,
                          dropout_rng: Array | None = None, dropout_rate: float = 0.0,
                          broadcast_dropout: bool = True, deterministic: bool = True,
                          dtype: Dtype | None = None, precision=None,
                          force_fp32_for_softmax: bool = True,
                          implementation: str = "auto") -> Array:
    """The one attention of every transformer here (ViT-VQGAN, MaskGIT), as Flax's
    `MultiHeadDotProductAttention(attention_fn=...)`: query/key/value [B, N, heads, head_dim]
    -> [B, N, heads, head_dim]; `mask` broadcastable to [B, heads, N, N] (True: attend).

    Built on `jax.nn.dot_product_attention` (cuDNN flash attention on GPUs, see
    `attention_backend`). Attention-weight dropout needs the weights themselves, which a fused
    kernel never forms: while it is active (training with attention_dropout_rate > 0) Flax's
    einsum attention runs instead. Softmax runs in float32 under XLA whatever the dtype."""
    if dropout_rate > 0.0 and not deterministic:
        return nn.dot_product_attention(
            query, key, value, mask=mask, dropout_rng=dropout_rng, dropout_rate=dropout_rate,
            broadcast_dropout=broadcast_dropout, deterministic=False, dtype=dtype,
            precision=precision, force_fp32_for_softmax=force_fp32_for_softmax)
    dtype = dtype or query.dtype
    backend = attention_backend(implementation, dtype, query.shape[-1])
    query, key, value = (x.astype(dtype) for x in (query, key, value))
    if backend == "xla" and force_fp32_for_softmax and jnp.dtype(dtype) != jnp.float32:
        # XLA: the scores and softmax in float32 (as Flax's force_fp32_for_softmax), the
        # weighted sum in the compute dtype.
        out = jax.nn.dot_product_attention(query.astype(jnp.float32), key.astype(jnp.float32),
                                           value.astype(jnp.float32), mask=mask,
                                           implementation="xla")
        return out.astype(dtype)
    return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation=backend)


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Drop(MHSA(LN(x))), then x + Drop(FF(LN(x))). Tokens [B, N, D]."""

    num_heads: int
    mlp_dim: int
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    attention_implementation: str = "auto"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"`width`={width} is not divisible by `num_heads`={self.num_heads}")
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        h = norm("ln_attention")(x)
        h = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=_dense_init,
            dropout_rate=self.attention_dropout_rate,
            force_fp32_for_softmax=True,
            attention_fn=functools.partial(dot_product_attention,
                                           implementation=self.attention_implementation),
            name="attention",
        )(h, h, deterministic=deterministic)
        x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
        h = norm("ln_feed_forward")(x)
        h = FeedForward(
            self.mlp_dim, self.feed_forward, self.dropout_rate, self.dtype, self.param_dtype,
            name="feed_forward",
        )(h, deterministic=deterministic)
        return x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class Transformer(nn.Module):
    """`num_layers` pre-LN blocks and a final LayerNorm. Tokens [B, N, D] -> [B, N, D].

    `remat=True` recomputes each block's activations in the backward pass (less memory).
    """

    num_layers: int
    num_heads: int
    mlp_dim: int
    feed_forward: str = "mlp"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    attention_implementation: str = "auto"
    remat: bool = False
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        block_cls = TransformerBlock
        if self.remat:
            block_cls = nn.remat(TransformerBlock, static_argnums=(2,))
        for index in range(self.num_layers):
            x = block_cls(
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                feed_forward=self.feed_forward,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                attention_implementation=self.attention_implementation,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"block_{index:02d}",
            )(x, deterministic)
        return nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="ln_final")(x)


def transformer_for(module: nn.Module, size: TransformerSize, name: str = "transformer"):
    """A `Transformer` of `size` with `module`'s feed_forward, dropout rates, remat and dtypes."""
    shared = {field: getattr(module, field) for field in (
        "feed_forward", "dropout_rate", "attention_dropout_rate", "remat", "dtype", "param_dtype")}
    return Transformer(num_layers=size.num_layers, num_heads=size.num_heads, mlp_dim=size.mlp_dim,
                       name=name, **shared)


class TanhHead(nn.Module):
    """ViT-VQGAN's output head: Dense(hidden) -> tanh -> Dense(features) (no output activation)."""

    hidden_dim: int
    features: int
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        dense = lambda features, name: nn.Dense(  # noqa: E731
            features, dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=_dense_init,
            name=name,
        )
        return dense(self.features, "output")(jnp.tanh(dense(self.hidden_dim, "hidden")(x)))


# -- convolution with a matmul kernel gradient ------------------------------------------------
# XLA:CPU runs a convolution's forward and input gradient near its matmul rate but the kernel
# gradient (a "convolution" whose window is the whole image) at 18-24% of it: for the StyleGAN
# discriminator's 3x3 convs (128 channels at 128 px, 512 at 32 px) the kernel gradient took
# 4-5x the forward. As kh * kw matmuls over the shifted input it runs 1.4-3.4x faster on CPU from
# 128 channels up, and slower below (2x slower at 64, docs/benchmarks.md), so it is used on CPU
# for convs with at least MATMUL_KERNEL_GRAD_MIN_CHANNELS in and out channels; elsewhere
# (cuDNN, TPU) and for narrower convs the kernel gradient is XLA's. The forward and the input
# gradient are always XLA's. `nn.Conv(..., conv_general_dilated=conv_general_dilated)` uses it;
# the parameters are unchanged.
MATMUL_KERNEL_GRAD_MIN_CHANNELS = 128


def _explicit_padding(padding, in_spatial, window, strides):
    if isinstance(padding, str):
        return tuple(jax.lax.padtype_to_pads(in_spatial, window, strides, padding))
    return tuple(tuple(p) for p in padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_nhwc(lhs, rhs, strides, padding, precision):
    return jax.lax.conv_general_dilated(lhs, rhs, strides, padding, precision=precision,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_nhwc_fwd(lhs, rhs, strides, padding, precision):
    return _conv_nhwc(lhs, rhs, strides, padding, precision), (lhs, rhs)


def _conv_nhwc_bwd(strides, padding, precision, residuals, dy):
    lhs, rhs = residuals
    conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, strides, padding, precision=precision, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    dx = jax.vjp(lambda x: conv(x, rhs), lhs)[1](dy)[0]

    def xla_kernel_grad(lhs, dy):
        return jax.vjp(lambda k: conv(lhs, k), rhs)[1](dy)[0]

    def matmul_kernel_grad(lhs, dy):
        kh, kw, c_in, c_out = rhs.shape
        _, out_h, out_w, _ = dy.shape
        padded = jnp.pad(lhs, ((0, 0), padding[0], padding[1], (0, 0)))
        dy2 = dy.reshape(-1, c_out)
        taps = []
        for i in range(kh):
            for j in range(kw):
                window = jax.lax.slice(
                    padded, (0, i, j, 0),
                    (padded.shape[0], i + strides[0] * (out_h - 1) + 1,
                     j + strides[1] * (out_w - 1) + 1, c_in), (1, strides[0], strides[1], 1))
                # Materialised on its own: fused into the dot, XLA:CPU's loop emitter is slower.
                window = jax.lax.optimization_barrier(window.reshape(-1, c_in))
                taps.append(jnp.dot(window.T, dy2, precision=precision,
                                    preferred_element_type=jnp.float32))
        return jnp.stack(taps).reshape(rhs.shape).astype(rhs.dtype)

    dk = jax.lax.platform_dependent(lhs, dy, cpu=matmul_kernel_grad, default=xla_kernel_grad)
    return dx, dk


_conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """`lax.conv_general_dilated` whose kernel gradient is computed on CPU as matmuls (see above)
    for plain 2D convolutions in NHWC/HWIO (Flax's `nn.Conv` layout: strides and padding of any
    kind, no dilation or groups) with at least MATMUL_KERNEL_GRAD_MIN_CHANNELS channels in and
    out; any other case is `lax.conv_general_dilated` itself."""
    strides = tuple(window_strides)
    plain = (lhs.ndim == 4 and rhs.ndim == 4
             and min(rhs.shape[2:]) >= MATMUL_KERNEL_GRAD_MIN_CHANNELS and len(strides) == 2 and feature_group_count == 1
             and batch_group_count == 1 and preferred_element_type is None
             and all(d in (None, 1) for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
             and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")))
    if not plain:
        return jax.lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    pads = _explicit_padding(padding, lhs.shape[1:3], rhs.shape[:2], strides)
    return _conv_nhwc(lhs, rhs, strides, pads, precision)


# -- convolutional blocks ----------------------------------------------------------------------
class ResBlock(nn.Module):
    """Residual block: (GroupNorm -> swish -> conv3x3) x 2, plus a 1x1-conv shortcut when the
    channel count changes. Convs carry no bias (MaskGIT's `vqgan_tokenizer.ResBlock`).

    `shortcut="input"` projects the block's input (taming / ResNet). `shortcut="output"` reproduces
    MaskGIT's released code, which applies the 1x1 conv to the residual branch's output instead
    (x + W x); use it to run MaskGIT's checkpoints. Sub-modules are created in MaskGIT's order
    (GroupNorm_0, Conv_0, GroupNorm_1, Conv_1, Conv_2), so its parameter trees map by name.
    """

    filters: int
    norm_groups: int = 32
    shortcut: str = "input"
    activation: Callable[[Array], Array] = nn.swish
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = lambda kernel: nn.Conv(  # noqa: E731
            self.filters, (kernel, kernel), use_bias=False, dtype=self.dtype,
            param_dtype=self.param_dtype, conv_general_dilated=conv_general_dilated,
        )
        norm = lambda: nn.GroupNorm(  # noqa: E731
            num_groups=self.norm_groups, dtype=self.dtype, param_dtype=self.param_dtype
        )
        residual = x
        h = conv(3)(self.activation(norm()(x)))
        h = conv(3)(self.activation(norm()(h)))
        if x.shape[-1] != self.filters:
            if self.shortcut == "input":
                residual = conv(1)(x)
            elif self.shortcut == "output":
                residual = conv(1)(h)
            else:
                raise ValueError(f"unknown shortcut {self.shortcut!r}; choose 'input' or 'output'")
        return h + residual.astype(h.dtype)


def downsample_avg(x: Array) -> Array:
    """2x2 average pooling with stride 2, [B, H, W, C] -> [B, H/2, W/2, C] (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample_nearest(x: Array, factor: int = 2) -> Array:
    """Nearest-neighbour upsampling, [B, H, W, C] -> [B, H*f, W*f, C]."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
