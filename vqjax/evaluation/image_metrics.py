"""PSNR and SSIM per image, in JAX (jittable, batched, any mesh).

    psnr(reconstructions, images, data_range=2.0)   # [B] dB; images in [-1, 1] have range 2
    ssim(reconstructions, images, data_range=2.0)   # [B]

The data range is always stated: it is the `L` of both metrics (max - min of the pixel scale,
2 for [-1, 1], 1 for [0, 1], 255 for uint8), and results on different scales differ.

- PSNR = 10 log10(L^2 / MSE), MSE over all pixels and channels of an image
  (`skimage.metrics.peak_signal_noise_ratio`); identical images give +inf.
- SSIM (Wang et al. 2004) as `skimage.metrics.structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=L, channel_axis=-1)`: local statistics under
  a Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11x11), K1 = 0.01, K2 = 0.03,
  SSIM map averaged over the positions whose window lies inside the image (skimage crops a
  5-pixel border) and over channels. skimage pads with reflection before filtering, but the
  border it crops is exactly what the padding reaches, so a "valid" filter here gives the same
  numbers. Images need H, W >= 11.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scipy.ndimage.gaussian_filter's default, used by skimage
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(name: str, a: Array, b: Array) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"{name}: a and b must both be [B, H, W, C], got {a.shape}, {b.shape}")


def psnr(a: Array, b: Array, *, data_range: float) -> Array:
    """Peak signal-to-noise ratio in dB per image: [B, H, W, C] x2 -> float32 [B]."""
    _check_pair("psnr", a, b)
    mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(1, 2, 3))
    return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
    """The normalized 1-D Gaussian scipy.ndimage.gaussian_filter uses (radius int(t*s + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: Array, window: Array) -> Array:
    """Separable "valid" filtering of [N, H, W, C] with a 1-D window along H then W."""
    n = window.shape[0]
    channels = x.shape[-1]
    dims = ("NHWC", "HWIO", "NHWC")
    kh = jnp.tile(window.reshape(n, 1, 1, 1), (1, 1, 1, channels))  # depthwise
    kw = jnp.tile(window.reshape(1, n, 1, 1), (1, 1, 1, channels))
    conv = lambda y, k: jax.lax.conv_general_dilated(  # noqa: E731
        y, k, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=channels,
        precision=jax.lax.Precision.HIGHEST)
    return conv(conv(x, kh), kw)


def ssim(a: Array, b: Array, *, data_range: float, sigma: float = SSIM_SIGMA) -> Array:
    """Mean structural similarity per image: [B, H, W, C] x2 -> float32 [B] (see module doc)."""
    _check_pair("ssim", a, b)
    window = jnp.asarray(gaussian_window(sigma), jnp.float32)
    if min(a.shape[1], a.shape[2]) < window.shape[0]:
        raise ValueError(f"ssim: images must be at least {window.shape[0]}x{window.shape[0]} "
                         f"for the Gaussian window, got {a.shape[1]}x{a.shape[2]}")
    x, y = a.astype(jnp.float32), b.astype(jnp.float32)
    # Moments of images centred on their own means (the window sums to 1, so the local means
    # shift back exactly): E[x^2] - E[x]^2 then cancels far less in float32.
    mx = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    my = jnp.mean(y, axis=(1, 2, 3), keepdims=True)
    x, y = x - mx, y - my
    # One filtering pass over the five local moments: [5B, H', W', C].
    moments = _filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=0), window)
    ux, uy, uxx, uyy, uxy = jnp.split(moments, 5, axis=0)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population (co)variances
    ux, uy = ux + mx, uy + my
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(ssim_map, axis=(1, 2, 3))
