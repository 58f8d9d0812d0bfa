"""FID and Inception Score on the host, in float64.

    stats = FeatureStats()                       # streaming: any number of batches, any order
    for batch in batches:
        pool3, logits = inception_features(params, batch)
        stats.update(pool3)
    fid = frechet_distance_from_stats(stats.result(), load_stats("imagenet_val_256.npz"))

- FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)) between
  Gaussians fitted to InceptionV3 pool3 features, in float64. The trace of the matrix square root
  comes from symmetric eigendecompositions instead of pytorch-fid's `scipy.linalg.sqrtm(S1 @ S2)`:
  S1 S2 is similar to the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), so tr((S1 S2)^(1/2)) is the sum
  of the square roots of that matrix's eigenvalues (`np.linalg.eigh` for S1^(1/2), `eigvalsh`
  for the rest; eigenvalues below 0, rounding noise of singular covariances, count as 0). Same
  value as pytorch-fid's `calculate_frechet_distance` (tested against its sqrtm: 1e-13 relative
  when well-conditioned, 1e-8 with fewer samples than dimensions, where sqrtm's own noise on the
  zero eigenvalues is the difference), 3-5x faster at 2048-d (6-7 s against 22-27 s on one core),
  and never singular: no `eps * I` retry is needed (pass `eps` to add it anyway), no imaginary
  parts to drop.
  Covariances are unbiased (ddof=1, `np.cov`'s default, as pytorch-fid).
- Streaming statistics: per-batch means and centred scatter matrices merged with Chan et al.'s
  pairwise update (exact in exact arithmetic, and free of the cancellation of
  `E[xx^T] - mu mu^T` in floating point); equal to `np.mean` / `np.cov` over all features.
- Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))) from the 1008-way softmax,
  over `splits` (10) consecutive equal parts of the samples (improved-gan's `inception_score.py`:
  part i is rows [i*N//splits, (i+1)*N//splits)); returns the mean and std over the parts.
- Statistics files: .npz with `mu` [D], `sigma` [D, D], `count` (this module's, and the keys of
  pytorch-fid's `--save-stats` files). ADM's reference batches (`VIRTUAL_imagenet256_labeled.npz`)
  also load: their precomputed `mu`/`sigma` are used, or the `arr_0` images (uint8 [N, H, W, 3])
  are run through a feature function you pass.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from vqjax.evaluation.host import to_host


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """A Gaussian fitted to features: mean `mu` [D], covariance `sigma` [D, D] (float64)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int = 0  # number of feature vectors they were computed from (0: unknown)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        return save_stats(path, self)


class FeatureStats:
    """Streaming mean and covariance of feature vectors, accumulated in float64 on the host.

    `update(features [N, D], mask=None)` takes device or host arrays (a multi-host global array
    is gathered); `merge` combines accumulators (e.g. computed in parallel); `result()` gives the
    mean and unbiased covariance.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self._mean = None if dim is None else np.zeros((dim,), np.float64)
        self._scatter = None if dim is None else np.zeros((dim, dim), np.float64)

    def update(self, features: Any, mask: Any = None) -> "FeatureStats":
        x = np.asarray(to_host(features), np.float64)
        if x.ndim != 2:
            raise ValueError(f"FeatureStats.update: features must be [N, D], got {x.shape}")
        if mask is not None:
            x = x[np.asarray(to_host(mask)).reshape(-1).astype(bool)]
        if not np.all(np.isfinite(x)):
            raise ValueError("FeatureStats.update: non-finite features")
        if x.shape[0] == 0:
            return self
        mean = x.mean(axis=0)
        centred = x - mean
        self._merge(x.shape[0], mean, centred.T @ centred)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.count:
            self._merge(other.count, other._mean, other._scatter)
        return self

    def _merge(self, count: int, mean: np.ndarray, scatter: np.ndarray) -> None:
        if self._mean is None:
            self.dim = mean.shape[0]
            self._mean = np.zeros_like(mean)
            self._scatter = np.zeros_like(scatter)
        if mean.shape[0] != self.dim:
            raise ValueError(f"FeatureStats: feature dim {mean.shape[0]}, expected {self.dim}")
        total = self.count + count
        delta = mean - self._mean
        correction = np.outer(delta, delta) * (self.count * count / total)
        self._scatter = self._scatter + scatter + correction
        self._mean = self._mean + delta * (count / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        if not self.count:
            raise ValueError("FeatureStats: no features accumulated")
        return self._mean.copy()

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (ddof=1) covariance, as `np.cov(features, rowvar=False)`."""
        if self.count < 2:
            raise ValueError(f"FeatureStats: a covariance needs >= 2 features, got {self.count}")
        return self._scatter / (self.count - 1)

    def result(self) -> FeatureStatistics:
        return FeatureStatistics(self.mean, self.covariance, self.count)


def feature_statistics(features: Any) -> FeatureStatistics:
    """mu, sigma (ddof=1) of all features [N, D] at once, in float64."""
    return FeatureStats().update(features).result()


# -- Frechet distance ------------------------------------------------------------------------------


# An eigenvalue below -NEGATIVE_TOLERANCE x the largest is not rounding noise: the matrix is not a
# covariance (pytorch-fid's analogue: imaginary parts above 1e-3 on sqrtm's diagonal raise).
NEGATIVE_TOLERANCE = 1e-3


def _checked_eigenvalues(eigenvalues: np.ndarray, what: str) -> np.ndarray:
    """`eigenvalues` with rounding noise below zero clipped to 0; clearly negative ones raise."""
    scale = max(float(np.max(np.abs(eigenvalues), initial=0.0)), np.finfo(np.float64).tiny)
    if eigenvalues.size and eigenvalues.min() < -NEGATIVE_TOLERANCE * scale:
        raise ValueError(f"frechet_distance: {what} has eigenvalue {eigenvalues.min():.6g} "
                         f"(largest {scale:.6g}): not a positive semi-definite covariance")
    return np.clip(eigenvalues, 0.0, None)


def _symmetric(sigma: np.ndarray, name: str) -> np.ndarray:
    asymmetry = np.max(np.abs(sigma - sigma.T), initial=0.0)
    if asymmetry > NEGATIVE_TOLERANCE * max(np.max(np.abs(sigma), initial=0.0), 1e-300):
        raise ValueError(f"frechet_distance: {name} is not symmetric (max |S - S^T| = "
                         f"{asymmetry:.3g}): not a covariance")
    return (sigma + sigma.T) / 2  # eigh reads one triangle: average rounding asymmetry away


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((S1 S2)^(1/2)) of symmetric PSD S1, S2 [D, D], float64: sum of sqrt(eigenvalues of
    S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix similar to S1 S2 (S1^(1/2) by `eigh`)."""
    sigma1 = _symmetric(np.asarray(sigma1, np.float64), "sigma1")
    sigma2 = _symmetric(np.asarray(sigma2, np.float64), "sigma2")
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(_checked_eigenvalues(w, "sigma1"))) @ v.T       # S1^(1/2) [D, D]
    inner = root1 @ sigma2 @ root1
    inner = (inner + inner.T) / 2
    eigenvalues = _checked_eigenvalues(np.linalg.eigvalsh(inner), "S1^(1/2) sigma2 S1^(1/2)")
    return float(np.sum(np.sqrt(eigenvalues)))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 0.0) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

    The value of pytorch-fid's `calculate_frechet_distance` (||mu1 - mu2||^2 + tr(S1) + tr(S2)
    - 2 tr((S1 S2)^(1/2))), with the trace of the square root from eigenvalues
    (`trace_sqrt_product`) rather than `scipy.linalg.sqrtm`: 3-5x faster at 2048-d and finite
    for singular covariances too. `eps > 0` adds eps * I to both covariances in the square-root
    term only, as pytorch-fid's retry when its sqrtm of a singular product is not finite (it uses
    1e-6); by default nothing is added, as pytorch-fid whenever its sqrtm succeeds.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"frechet_distance: means of different shapes {mu1.shape}, {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"frechet_distance: covariances {sigma1.shape}, {sigma2.shape} do not "
                         f"match the means {mu1.shape}")
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"frechet_distance: {name} is not finite")
    diff = mu1 - mu2
    offset = np.eye(sigma1.shape[0]) * eps if eps else 0.0
    tr_covmean = trace_sqrt_product(sigma1 + offset, sigma2 + offset)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_from_stats(a: FeatureStatistics, b: FeatureStatistics,
                                eps: float = 0.0) -> float:
    """FID between two `FeatureStatistics`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, eps)


# -- Inception Score -------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def inception_score(logits: Any, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` parts of exp(E_x KL(p(y|x) || p(y))), p = softmax(logits).

    `logits` [N, 1008] from `inception_features` (bias-free, the reference convention), in
    float64 on the host. Parts are consecutive rows, as improved-gan's code; pass the samples in
    the order they were generated (or shuffled) — not sorted by class.
    """
    logits = np.asarray(to_host(logits), np.float64)
    if logits.ndim != 2:
        raise ValueError(f"inception_score: logits must be [N, classes], got {logits.shape}")
    n = logits.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"inception_score: splits={splits} needs 1 <= splits <= N={n}")
    log_p = _log_softmax(logits)                                            # log p(y|x) [N, K]
    p = np.exp(log_p)
    scores = []
    for i in range(splits):
        rows = slice(i * n // splits, (i + 1) * n // splits)
        part_log_p, part_p = log_p[rows], p[rows]
        with np.errstate(divide="ignore"):
            log_marginal = np.log(np.mean(part_p, axis=0))                  # log p(y) [K]
        # p = 0 entries (underflow) contribute 0 * finite = 0: log_p is finite from log_softmax.
        kl = np.sum(part_p * (part_log_p - np.where(part_p > 0, log_marginal, 0.0)), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


# -- statistics files -----------------------------------------------------------------------------


def save_stats(path: str | os.PathLike, stats: FeatureStatistics) -> pathlib.Path:
    """Write `mu`, `sigma`, `count` to an .npz (atomically: a killed job leaves no half file)."""
    path = pathlib.Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, mu=np.asarray(stats.mu, np.float64), sigma=np.asarray(stats.sigma, np.float64),
             count=np.int64(stats.count))
    os.replace(tmp, path)
    return path


def _npz_array_length(path: pathlib.Path, key: str) -> int:
    """Leading dimension of `key` in an .npz, from the .npy header (the array is not loaded)."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                       else np.lib.format.read_array_header_2_0(f))
    return int(shape[0])


FeatureFn = Callable[[np.ndarray], Any]  # uint8 images [B, H, W, 3] -> pool3 features [B, 2048]


def load_stats(
    path: str | os.PathLike,
    *,
    feature_fn: FeatureFn | None = None,
    batch_size: int = 250,
    use_images: bool = False,
) -> FeatureStatistics:
    """Reference statistics from an .npz: `mu`/`sigma` (+ `count`) when present (this module's
    files, pytorch-fid's, ADM's reference batches); otherwise, or with `use_images=True`, the
    statistics of its `arr_0` images (uint8 [N, H, W, 3], ADM's layout) through `feature_fn`
    (uint8 batch -> features; e.g. `lambda x: inception_features(params, images_from_uint8(x))[0]`).
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"FID reference statistics not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
        if {"mu", "sigma"} <= files and not use_images:
            count = int(data["count"]) if "count" in files else (
                _npz_array_length(path, "arr_0") if "arr_0" in files else 0)
            return FeatureStatistics(np.asarray(data["mu"], np.float64),
                                     np.asarray(data["sigma"], np.float64), count)
        if "arr_0" not in files:
            raise ValueError(f"{path}: neither mu/sigma nor arr_0 images (keys: {sorted(files)})")
        if feature_fn is None:
            raise ValueError(f"{path} holds images (arr_0) only: pass feature_fn to compute their "
                             "statistics")
        images = data["arr_0"]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be images [N, H, W, 3], got {images.shape}")
    stats = FeatureStats()
    for start in range(0, images.shape[0], batch_size):
        stats.update(feature_fn(images[start:start + batch_size]))
    return stats.result()


def cached_stats(path: str | os.PathLike, compute: Callable[[], FeatureStatistics],
                 *, overwrite: bool = False) -> FeatureStatistics:
    """Load the statistics cached at `path`, or `compute()` them and cache them there."""
    path = pathlib.Path(path).expanduser()
    if path.is_file() and not overwrite:
        return load_stats(path)
    stats = compute()
    save_stats(path, stats)
    return stats


def stats_from_batches(feature_fn: Callable[[Any], Any], batches: Iterable[Any],
                       mask_fn: Callable[[Any], Any] | None = None) -> FeatureStatistics:
    """Statistics of `feature_fn(batch)` over an iterable of batches (`mask_fn(batch)` [B] keeps
    the rows where it is true, e.g. the eval pipeline's padding mask)."""
    stats = FeatureStats()
    for batch in batches:
        stats.update(feature_fn(batch), None if mask_fn is None else mask_fn(batch))
    return stats.result()
