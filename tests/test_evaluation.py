"""Evaluation metrics against independent references: FID/IS math (numpy/scipy), PSNR/SSIM
(scikit-image), streaming statistics (numpy), codebook counts (bincount), and the Flax FID
InceptionV3 layer by layer against a torch re-implementation of pytorch-fid's network (skipped
without torch)."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from vqjax import evaluation
from vqjax.evaluation import codebook as codebook_lib
from vqjax.evaluation import inception as inception_lib

# -- Frechet distance ------------------------------------------------------------------------------


def _random_spd(rng, dim, rank=None):
    a = rng.standard_normal((dim, rank or 2 * dim))
    return a @ a.T / a.shape[1]


def _frechet_by_eigh(mu1, sigma1, mu2, sigma2):
    """tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)): symmetric eigendecompositions only."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sum(np.sqrt(np.clip(inner, 0, None)))
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


@pytest.mark.parametrize("dim", [1, 8, 64])
def test_frechet_distance_matches_eigh_formula(dim):
    rng = np.random.default_rng(dim)
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim) * 0.5
    sigma1, sigma2 = _random_spd(rng, dim), _random_spd(rng, dim)
    got = evaluation.frechet_distance(mu1, sigma1, mu2, sigma2)
    want = _frechet_by_eigh(mu1, sigma1, mu2, sigma2)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    assert isinstance(got, float)


def test_frechet_distance_of_gaussians_closed_form():
    # Isotropic: ||mu1 - mu2||^2 + d (s1 - s2)^2 for N(mu, s^2 I).
    d = 5
    got = evaluation.frechet_distance(np.zeros(d), 4 * np.eye(d), np.ones(d), 9 * np.eye(d))
    np.testing.assert_allclose(got, d + d * (2 - 3) ** 2, rtol=1e-12)


def test_fid_of_a_set_with_itself_is_zero_also_when_singular():
    rng = np.random.default_rng(0)
    full = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32))
    stats = evaluation.feature_statistics(full)
    assert abs(evaluation.frechet_distance_from_stats(stats, stats)) < 1e-8
    few = rng.standard_normal((20, 64))  # N < D: singular covariance (rank 19)
    stats = evaluation.feature_statistics(few)
    assert np.linalg.matrix_rank(stats.sigma) < 64
    fid = evaluation.frechet_distance_from_stats(stats, stats)
    assert np.isfinite(fid) and abs(fid) < 1e-4
    other = evaluation.feature_statistics(rng.standard_normal((20, 64)) + 1.0)
    fid = evaluation.frechet_distance_from_stats(stats, other)
    want = _frechet_by_eigh(stats.mu, stats.sigma, other.mu, other.sigma)
    np.testing.assert_allclose(fid, want, rtol=1e-5)


def _pytorch_fid_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's `calculate_frechet_distance` (scipy sqrtm of the product, eps retry when it
    is not finite, imaginary parts dropped): the independent reference."""
    import warnings

    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Matrix is singular and may not have a square root"
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@pytest.mark.parametrize("dim,n1,n2", [
    (64, 500, 700),    # well-conditioned
    (64, 20, 30),      # both rank-deficient: fewer samples than dimensions
    (96, 40, 400),     # one rank-deficient
    (256, 1000, 1000),
])
def test_frechet_distance_matches_scipy_sqrtm(dim, n1, n2):
    """The eigenvalue computation against pytorch-fid's sqrtm formula, on ReLU-like features."""
    rng = np.random.default_rng(dim + n1)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    x1 = np.maximum(rng.standard_normal((n1, dim)) @ mix, 0)
    x2 = np.maximum(rng.standard_normal((n2, dim)) @ mix + 0.05, 0)
    a, b = evaluation.feature_statistics(x1), evaluation.feature_statistics(x2)
    if n1 < dim:
        assert np.linalg.matrix_rank(a.sigma) < dim
    got = evaluation.frechet_distance_from_stats(a, b)
    want = _pytorch_fid_frechet(a.mu, a.sigma, b.mu, b.sigma)
    # ~1e-13 when well-conditioned, ~1e-8 when singular (sqrtm's noise on zero eigenvalues)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got > 0
    np.testing.assert_allclose(evaluation.frechet_distance_from_stats(b, a), got, rtol=1e-7)


def test_frechet_distance_eps_and_invalid_covariances():
    rng = np.random.default_rng(1)
    s1, s2, mu = _random_spd(rng, 6, rank=3), _random_spd(rng, 6), np.zeros(6)
    # eps adds eps * I in the square root term only, as pytorch-fid's retry
    got = evaluation.frechet_distance(mu, s1, mu, s2, eps=1e-3)
    offset = 1e-3 * np.eye(6)
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset)).real
    want = np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # rounding asymmetry is averaged away; what is not a covariance raises
    noisy = s2 + 1e-12 * rng.standard_normal((6, 6))
    np.testing.assert_allclose(evaluation.frechet_distance(mu, s1, mu, noisy),
                               evaluation.frechet_distance(mu, s1, mu, s2), rtol=1e-6)
    with pytest.raises(ValueError, match="positive semi-definite"):
        evaluation.frechet_distance(mu, s1, mu, s2 - 2 * np.trace(s2) * np.eye(6))
    with pytest.raises(ValueError, match="not symmetric"):
        evaluation.frechet_distance(mu, s1, mu, s2 + np.triu(np.ones((6, 6)), 1))
    with pytest.raises(ValueError, match="not finite"):
        evaluation.frechet_distance(mu, s1 * np.nan, mu, s2)


# -- Inception Score -------------------------------------------------------------------------------


def test_inception_score_uniform_is_one():
    mean, std = evaluation.inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_confident_distinct_is_number_of_classes():
    classes, splits = 10, 5
    labels = np.tile(np.arange(classes), splits)  # each split sees every class once
    logits = 60.0 * np.eye(1008)[labels]
    mean, std = evaluation.inception_score(logits, splits=splits)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    # All samples the same confident class: 1.
    mean, _ = evaluation.inception_score(60.0 * np.eye(1008)[np.zeros(50, int)], splits=5)
    assert mean == pytest.approx(1.0, rel=1e-9)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((103, 20)) * 3
    splits = 4
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for i in range(splits):  # improved-gan's inception_score.py
        part = p[i * 103 // splits:(i + 1) * 103 // splits]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    mean, std = evaluation.inception_score(jnp.asarray(logits, jnp.float32), splits=splits)
    np.testing.assert_allclose([mean, std], [np.mean(scores), np.std(scores)], rtol=1e-5)
    mean64, _ = evaluation.inception_score(logits, splits=splits)
    np.testing.assert_allclose(mean64, np.mean(scores), rtol=1e-12)


# -- streaming statistics and files ----------------------------------------------------------------


def test_streaming_stats_equal_numpy_mean_cov():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 16)) * 3 + 1e4 for n in (1, 7, 32, 5, 64)]  # large offset
    batches[1] = jnp.asarray(batches[1])  # a device array (float32) among host float64 ones
    masks = [rng.random(len(b)) > 0.3 for b in batches]
    masks[0][:] = True
    stats = evaluation.FeatureStats()
    for batch, mask in zip(batches, masks):
        stats.update(batch, mask)
    batches = [np.asarray(b, np.float64) for b in batches]
    kept = np.concatenate([b[m] for b, m in zip(batches, masks)])
    result = stats.result()
    assert result.count == kept.shape[0]
    np.testing.assert_allclose(result.mu, kept.mean(0), rtol=1e-13)
    np.testing.assert_allclose(result.sigma, np.cov(kept, rowvar=False), rtol=1e-9, atol=1e-9)
    # merge: two halves accumulated separately
    a, b = evaluation.FeatureStats(), evaluation.FeatureStats()
    for i, batch in enumerate(batches):
        (a if i % 2 else b).update(batch)
    merged = a.merge(b).result()
    everything = np.concatenate(batches)
    np.testing.assert_allclose(merged.mu, everything.mean(0), rtol=1e-13)
    np.testing.assert_allclose(merged.sigma, np.cov(everything, rowvar=False), rtol=1e-9, atol=1e-9)


def test_stats_files_and_adm_reference_batches(tmp_path):
    rng = np.random.default_rng(0)
    stats = evaluation.feature_statistics(rng.standard_normal((40, 8)))
    path = evaluation.save_stats(tmp_path / "ref.npz", stats)
    loaded = evaluation.load_stats(path)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 40

    images = rng.integers(0, 256, (23, 12, 12, 3), dtype=np.uint8)

    def feature_fn(x):  # uint8 [B, H, W, 3] -> 6 features
        x = np.asarray(x, np.float64)
        return np.concatenate([x.mean((1, 2)), x.std((1, 2))], axis=1)

    np.savez(tmp_path / "adm_images.npz", arr_0=images)
    from_images = evaluation.load_stats(tmp_path / "adm_images.npz", feature_fn=feature_fn,
                                        batch_size=5)
    want = evaluation.feature_statistics(feature_fn(images))
    np.testing.assert_allclose(from_images.mu, want.mu, rtol=1e-12)
    np.testing.assert_allclose(from_images.sigma, want.sigma, rtol=1e-10)
    with pytest.raises(ValueError, match="feature_fn"):
        evaluation.load_stats(tmp_path / "adm_images.npz")

    np.savez(tmp_path / "adm_full.npz", arr_0=images, mu=want.mu, sigma=want.sigma,
             mu_s=np.zeros(3), sigma_s=np.eye(3))
    adm = evaluation.load_stats(tmp_path / "adm_full.npz")  # precomputed mu/sigma win
    np.testing.assert_array_equal(adm.mu, want.mu)
    assert adm.count == 23

    calls = []

    def compute():
        calls.append(1)
        return want

    for _ in range(2):
        cached = evaluation.cached_stats(tmp_path / "cache" / "stats.npz", compute)
        np.testing.assert_array_equal(cached.sigma, want.sigma)
    assert len(calls) == 1


# -- PSNR / SSIM -----------------------------------------------------------------------------------


def _image_pairs(data_range, shape=(3, 24, 32, 3)):
    rng = np.random.default_rng(int(data_range))
    noise_a = rng.uniform(0, data_range, shape)
    noise_b = rng.uniform(0, data_range, shape)
    yy, xx = np.mgrid[:shape[1], :shape[2]]
    smooth = data_range * (0.5 + 0.4 * np.sin(xx / 4.0 + yy / 7.0))[None, :, :, None]
    smooth = np.broadcast_to(smooth, shape) * np.linspace(0.6, 1.0, shape[-1])
    blurred = np.clip(smooth + rng.normal(0, 0.05 * data_range, shape), 0, data_range)
    return [(noise_a, noise_b), (smooth, blurred), (blurred, 0.8 * blurred + 0.1 * data_range)]


@pytest.mark.parametrize("data_range", [2.0, 255.0])
def test_psnr_ssim_match_skimage(data_range):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = jax.jit(evaluation.psnr, static_argnames="data_range")
    ssim = jax.jit(evaluation.ssim, static_argnames="data_range")
    for a, b in _image_pairs(data_range):
        want_psnr = [peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)]
        want_ssim = [structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=data_range,
                                           channel_axis=-1) for x, y in zip(a, b)]
        a32, b32 = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
        got_psnr = psnr(a32, b32, data_range=data_range)
        got_ssim = ssim(a32, b32, data_range=data_range)
        assert got_psnr.shape == got_ssim.shape == (a.shape[0],)
        np.testing.assert_allclose(got_psnr, want_psnr, atol=2e-5)
        np.testing.assert_allclose(got_ssim, want_ssim, atol=2e-6)


def test_ssim_grayscale_small_and_identical():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (2, 11, 15, 1))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    want = [structural_similarity(x[..., 0], y[..., 0], gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1.0)
            for x, y in zip(a, b)]
    np.testing.assert_allclose(evaluation.ssim(jnp.asarray(a), jnp.asarray(b), data_range=1.0),
                               want, atol=2e-6)
    np.testing.assert_allclose(evaluation.ssim(jnp.asarray(a), jnp.asarray(a), data_range=1.0), 1.0,
                               atol=1e-6)
    assert np.all(np.isinf(evaluation.psnr(jnp.asarray(a), jnp.asarray(a), data_range=1.0)))
    with pytest.raises(ValueError, match="11x11"):
        evaluation.ssim(jnp.zeros((1, 10, 12, 3)), jnp.zeros((1, 10, 12, 3)), data_range=1.0)


# -- codebook usage --------------------------------------------------------------------------------


def test_codebook_usage_accumulates_over_batches():
    rng = np.random.default_rng(0)
    size = 64
    usage = evaluation.CodebookUsage(size)
    kept = []
    for _ in range(4):
        idx = rng.integers(0, 40, (5, 4, 4))  # only codes < 40 are ever used
        mask = rng.random(5) > 0.3
        usage.update(jnp.asarray(idx, jnp.int32), mask=mask)
        kept.append(idx[mask].reshape(-1))
    kept = np.concatenate(kept)
    counts = np.bincount(kept, minlength=size)
    np.testing.assert_array_equal(usage.counts[0], counts)
    p = counts[counts > 0] / counts.sum()
    result = usage.result()
    assert result["usage"] == pytest.approx(np.count_nonzero(counts) / size)
    assert result["perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-12)
    assert result["tokens"] == kept.size
    # uniform use of every code: perplexity = codebook size
    uniform = evaluation.CodebookUsage(8).update(np.tile(np.arange(8), (3, 2))).result()
    assert uniform["usage"] == 1.0 and uniform["perplexity"] == pytest.approx(8.0)


def test_codebook_usage_multi_index():
    rng = np.random.default_rng(1)
    size, depth = 16, 3
    idx = rng.integers(0, size, (6, 2, 2, depth))
    idx[..., 2] = rng.integers(0, 4, (6, 2, 2))  # the last codebook uses 4 codes
    idx[:2, ..., 2] = -1                          # dropped depth: not counted
    usage = evaluation.CodebookUsage(size, index_axes=1)
    usage.update(idx[:3]).update(idx[3:])
    result = usage.result()
    for q in range(depth):
        column = idx[..., q].reshape(-1)
        counts = np.bincount(column[column >= 0], minlength=size)
        assert result[f"usage/q{q}"] == pytest.approx(np.count_nonzero(counts) / size)
        assert result[f"perplexity/q{q}"] == pytest.approx(
            codebook_lib.perplexity_from_counts(counts))
    assert result["usage/q2"] == pytest.approx(4 / size)
    assert result["usage"] == pytest.approx(np.mean([result[f"usage/q{q}"] for q in range(3)]))
    pooled = np.bincount(idx[idx >= 0].reshape(-1), minlength=size)
    assert result["pooled_perplexity"] == pytest.approx(codebook_lib.perplexity_from_counts(pooled))
    with pytest.raises(ValueError, match="codebook_size"):
        evaluation.CodebookUsage(4).update(np.array([[4]]))


# -- InceptionV3 -----------------------------------------------------------------------------------


def test_missing_weight_file_error_names_file_and_source(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "inception.npz"
    with pytest.raises(evaluation.InceptionWeightsNotFoundError) as info:
        evaluation.load_inception_params(missing)
    message = str(info.value)
    assert str(missing) in message
    assert "pt_inception-2015-12-05-6726825d.pth" in message
    assert evaluation.FID_WEIGHTS_URL in message
    assert "github.com/mseitzer/pytorch-fid/releases" in message
    assert "python -m launch.convert_inception" in message
    monkeypatch.setenv(inception_lib.WEIGHTS_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        evaluation.load_inception_params()


def test_random_inception_runs_end_to_end_without_torch(tmp_path):
    params = evaluation.init_inception_params(0)
    images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-1, maxval=1)
    pool3, logits = evaluation.inception_features(params, images)
    assert pool3.shape == (2, 2048) and logits.shape == (2, 1008)
    assert pool3.dtype == logits.dtype == jnp.float32
    assert np.all(np.isfinite(pool3)) and np.all(np.isfinite(logits))
    assert np.all(pool3 >= 0)  # an average of ReLU outputs
    # The default logits are bias-free (the Inception Score convention): pool3 @ fc kernel.
    np.testing.assert_allclose(logits, np.asarray(pool3) @ np.asarray(params["fc"]["kernel"]),
                               rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    assert np.abs(params["fc"]["bias"]).max() > 0.01  # ... so the bias would have shown
    # npz round trip through the loader (also checks names and shapes)
    flat = {"/".join(str(k.key) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    np.savez(tmp_path / "w.npz", **flat)
    loaded = evaluation.load_inception_params(tmp_path / "w.npz")
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    del flat["fc/bias"]
    np.savez(tmp_path / "bad.npz", **flat)
    with pytest.raises(ValueError, match="missing"):
        evaluation.load_inception_params(tmp_path / "bad.npz")


def _small_features(images):
    """A cheap stand-in for the Inception network: (12 features, 5 logits) per image."""
    x = jnp.asarray(images, jnp.float32)
    pooled = jax.image.resize(x, (x.shape[0], 2, 2, 3), "linear").reshape(x.shape[0], -1)
    return pooled, pooled[:, :5] * 4


def test_evaluate_reconstruction_and_samples(tmp_path):
    keys = jax.random.split(jax.random.key(1), 3)
    batches = [{"image": jax.random.uniform(k, (4, 16, 16, 3), minval=-1, maxval=1),
                "mask": np.ones(4, bool)} for k in keys]
    batches[2]["mask"] = np.array([True, True, False, False])  # eval padding

    def reconstruct(images):
        indices = jnp.zeros((images.shape[0], 4, 4), jnp.int32).at[:, 0, 0].set(3)
        return jnp.clip(images * 0.9, -1, 1), indices

    reference = tmp_path / "real_stats.npz"
    metrics = evaluation.evaluate_reconstruction(
        reconstruct, batches, reference=reference, data_range=2.0,
        codebook=evaluation.CodebookUsage(8), features_fn=_small_features)
    images = jnp.concatenate([b["image"][b["mask"]] for b in batches])
    recon = jnp.clip(images * 0.9, -1, 1)
    real_stats = evaluation.feature_statistics(_small_features(images)[0])
    assert reference.is_file() and evaluation.load_stats(reference).count == 10
    np.testing.assert_allclose(evaluation.load_stats(reference).sigma, real_stats.sigma, rtol=1e-6)
    assert metrics["examples"] == 10
    want_rfid = evaluation.frechet_distance_from_stats(
        evaluation.feature_statistics(_small_features(recon)[0]), real_stats)
    assert metrics["rfid"] == pytest.approx(want_rfid, rel=1e-5) and metrics["rfid"] > 0
    assert metrics["psnr"] == pytest.approx(
        float(np.mean(evaluation.psnr(recon, images, data_range=2.0))), rel=1e-6)
    assert metrics["ssim"] == pytest.approx(
        float(np.mean(evaluation.ssim(recon, images, data_range=2.0))), rel=1e-6)
    assert metrics["codebook/used_codes"] == 2 and metrics["codebook/tokens"] == 160
    again = evaluation.evaluate_reconstruction(reconstruct, batches, reference=reference,
                                               features_fn=_small_features)
    assert again["rfid"] == pytest.approx(metrics["rfid"], rel=1e-9)  # from the cached stats

    samples = evaluation.evaluate_samples(batches, reference=reference, splits=2,
                                          features_fn=_small_features)
    assert samples["examples"] == 10 and samples["fid"] == pytest.approx(0.0, abs=1e-6)
    score = evaluation.inception_score(_small_features(images)[1], splits=2)
    assert (samples["inception_score"], samples["inception_score_std"]) == pytest.approx(score)
    with pytest.raises(ValueError, match="inception_params"):
        evaluation.evaluate_samples(batches, reference=reference)


# -- InceptionV3 against a torch re-implementation of pytorch-fid's network -----------------------


def _torch_fid_inception():
    """pytorch-fid's FID InceptionV3 (`fid_inception_v3()` + its `InceptionV3` wrapper), with
    torchvision's Inception3 modules ported here (torchvision is not a dependency)."""
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class BasicConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, **kwargs):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
            self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)), inplace=True)

    class InceptionA(nn.Module):
        def __init__(self, in_channels, pool_features):
            super().__init__()
            self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
            self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
            self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
            self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    class InceptionB(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
            self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

        def forward(self, x):
            branch3x3 = self.branch3x3(x)
            branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
            return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)

    class InceptionC(nn.Module):
        def __init__(self, in_channels, channels_7x7):
            super().__init__()
            c7 = channels_7x7
            self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
            self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
            self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
            self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    class InceptionD(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
            self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
            self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
            self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
            self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
            self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

        def forward(self, x):
            branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
            branch7x7x3 = self.branch7x7x3_1(x)
            branch7x7x3 = self.branch7x7x3_2(branch7x7x3)
            branch7x7x3 = self.branch7x7x3_3(branch7x7x3)
            branch7x7x3 = self.branch7x7x3_4(branch7x7x3)
            branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
            return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)

    class InceptionE(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
            self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
            self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
            self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
            self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
            self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
            self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    # pytorch-fid's patched blocks (their forward methods, verbatim in structure).
    class FIDInceptionA(InceptionA):
        def forward(self, x):
            branch1x1 = self.branch1x1(x)
            branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
            branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1,
                                       count_include_pad=False)
            branch_pool = self.branch_pool(branch_pool)
            return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)

    class FIDInceptionC(InceptionC):
        def forward(self, x):
            branch1x1 = self.branch1x1(x)
            branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            branch7x7dbl = self.branch7x7dbl_1(x)
            branch7x7dbl = self.branch7x7dbl_2(branch7x7dbl)
            branch7x7dbl = self.branch7x7dbl_3(branch7x7dbl)
            branch7x7dbl = self.branch7x7dbl_4(branch7x7dbl)
            branch7x7dbl = self.branch7x7dbl_5(branch7x7dbl)
            branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1,
                                       count_include_pad=False)
            branch_pool = self.branch_pool(branch_pool)
            return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)

    class _FIDInceptionE(InceptionE):
        def _branches(self, x):
            branch1x1 = self.branch1x1(x)
            branch3x3 = self.branch3x3_1(x)
            branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
            branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl),
                                      self.branch3x3dbl_3b(branch3x3dbl)], 1)
            return branch1x1, branch3x3, branch3x3dbl

    class FIDInceptionE_1(_FIDInceptionE):
        def forward(self, x):
            branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1,
                                       count_include_pad=False)
            return torch.cat([*self._branches(x), self.branch_pool(branch_pool)], 1)

    class FIDInceptionE_2(_FIDInceptionE):
        def forward(self, x):
            branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
            return torch.cat([*self._branches(x), self.branch_pool(branch_pool)], 1)

    class FIDInception3(nn.Module):
        """torchvision Inception3(num_classes=1008, aux_logits=False) patched as pytorch-fid's
        `fid_inception_v3`, with its `InceptionV3` wrapper's resize and normalization."""

        def __init__(self):
            super().__init__()
            self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
            self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
            self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
            self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
            self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
            self.Mixed_5b = FIDInceptionA(192, pool_features=32)
            self.Mixed_5c = FIDInceptionA(256, pool_features=64)
            self.Mixed_5d = FIDInceptionA(288, pool_features=64)
            self.Mixed_6a = InceptionB(288)
            self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
            self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
            self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
            self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
            self.Mixed_7a = InceptionD(768)
            self.Mixed_7b = FIDInceptionE_1(1280)
            self.Mixed_7c = FIDInceptionE_2(2048)
            self.fc = nn.Linear(2048, 1008)

        def forward(self, inp):
            """inp [B, 3, H, W] in [0, 1] -> {layer name: output} (NCHW), pool3 and logits."""
            taps = {}
            x = F.interpolate(inp, size=(299, 299), mode="bilinear", align_corners=False)
            x = 2 * x - 1
            for name in inception_lib.BLOCK_NAMES[:-1]:
                if name.startswith("maxpool"):
                    x = F.max_pool2d(x, kernel_size=3, stride=2)
                else:
                    x = getattr(self, name)(x)
                taps[name] = x
            taps["pool3"] = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
            taps["logits"] = self.fc(taps["pool3"])
            return taps

    torch.manual_seed(0)
    model = FIDInception3().eval()
    with torch.no_grad():  # random weights with a useful scale, and non-trivial BatchNorms
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.05)
                module.bias.normal_(0.0, 1.0)
    return torch, model


def _import_converter():
    """launch/convert_inception.py, also when the repository root is not on sys.path."""
    try:
        from launch import convert_inception
    except ImportError:
        path = pathlib.Path(__file__).resolve().parents[1] / "launch" / "convert_inception.py"
        spec = importlib.util.spec_from_file_location("convert_inception", path)
        convert_inception = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(convert_inception)
    return convert_inception


def test_inception_matches_torch_pytorch_fid_layer_by_layer(tmp_path):
    torch, model = _torch_fid_inception()
    convert_inception = _import_converter()

    # The converter: state dict -> npz -> loader; and the .pth file path of the CLI.
    state_dict = model.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state_dict)
    np.savez(tmp_path / "converted.npz", **convert_inception.convert_state_dict(state_dict))
    params = evaluation.load_inception_params(tmp_path / "converted.npz")
    torch.save(state_dict, tmp_path / "random_fid_inception.pth")
    convert_inception.main(["--input", str(tmp_path / "random_fid_inception.pth"),
                            "--output", str(tmp_path / "cli.npz")])
    from_cli = evaluation.load_inception_params(tmp_path / "cli.npz")
    jax.tree.map(np.testing.assert_array_equal, from_cli, params)
    broken = dict(state_dict)
    del broken["Mixed_6e.branch_pool.bn.running_var"]
    with pytest.raises(ValueError, match="Mixed_6e.branch_pool.bn.running_var"):
        convert_inception.convert_state_dict(broken)

    # Same images, not 299x299 (the bilinear resize is part of the comparison): torch takes
    # [0, 1] NCHW as pytorch-fid, vqjax [-1, 1] NHWC.
    rng = np.random.default_rng(0)
    images01 = rng.uniform(0, 1, (2, 3, 120, 150)).astype(np.float32)
    with torch.no_grad():
        want = {k: v.numpy() for k, v in model(torch.from_numpy(images01)).items()}
    images = jnp.asarray(images01.transpose(0, 2, 3, 1) * 2 - 1)
    pool3, logits, taps = evaluation.inception_features(
        params, images, logits_bias=True, return_intermediates=True)

    report = {}
    for name in inception_lib.BLOCK_NAMES:
        got = np.asarray(taps[name])
        ref = want[name] if got.ndim == 2 else want[name].transpose(0, 2, 3, 1)
        assert got.shape == ref.shape, name
        report[name] = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    report["logits"] = np.max(np.abs(np.asarray(logits) - want["logits"])) / np.max(
        np.abs(want["logits"]))
    print("max |jax - torch| / max |torch| per layer:",
          {k: f"{v:.1e}" for k, v in report.items()})
    for name, rel in report.items():
        assert rel < 1e-4, (name, rel)
    np.testing.assert_allclose(pool3, want["pool3"], rtol=1e-4, atol=1e-4 * want["pool3"].max())
    np.testing.assert_allclose(params["fc"]["bias"], model.fc.bias.detach().numpy())


def test_bilinear_resize_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for height, width in [(32, 32), (64, 48), (256, 256), (512, 300), (17, 600)]:
        x = rng.uniform(-1, 1, (2, height, width, 3)).astype(np.float32)
        want = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
            align_corners=False).permute(0, 2, 3, 1).numpy()
        got = inception_lib.resize_bilinear(jnp.asarray(x), 299)
        np.testing.assert_allclose(got, want, atol=1e-6)


# -- gFID against ADM's reference batches: ADM's uint8 truncation and TF1 ResizeBilinear ----------


def _np_resize_bilinear_tf1(image, out_h, out_w):
    """TF1 ResizeBilinear (align_corners=False, half_pixel_centers=False) written from its formula
    (tensorflow/core/kernels/image/resize_bilinear_op.cc, legacy scaler) in loops. As in TF the
    source position is float32 (scale = float(in) / out; in = i * scale), the blend float64."""
    in_h, in_w, channels = image.shape
    out = np.zeros((out_h, out_w, channels))
    for i in range(out_h):
        y = float(np.float32(i) * (np.float32(in_h) / np.float32(out_h)))
        y0 = int(np.floor(y))
        y1, dy = min(y0 + 1, in_h - 1), y - y0
        for j in range(out_w):
            x = float(np.float32(j) * (np.float32(in_w) / np.float32(out_w)))
            x0 = int(np.floor(x))
            x1, dx = min(x0 + 1, in_w - 1), x - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * dx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * dx
            out[i, j] = top + (bottom - top) * dy
    return out


@pytest.mark.parametrize("in_size,out_size", [(7, 11), (32, 299), (300, 299), (9, 4)])
def test_resize_bilinear_tf1_matches_the_formula(in_size, out_size):
    rng = np.random.default_rng(in_size)
    image = rng.integers(0, 256, (in_size, in_size, 3)).astype(np.float32)
    got = np.asarray(inception_lib.resize_bilinear_tf1(jnp.asarray(image[None]), out_size))[0]
    np.testing.assert_allclose(got, _np_resize_bilinear_tf1(image.astype(np.float64), out_size,
                                                            out_size), atol=1e-3)
    if in_size < out_size:  # not the half-pixel resize of pytorch-fid / jax.image.resize
        half = np.asarray(inception_lib.resize_bilinear(jnp.asarray(image[None]), out_size))[0]
        assert np.max(np.abs(half - got)) > 1.0


def test_adm_uint8_truncates_like_guided_diffusion():
    x = np.array([-1.2, -1.0, -0.99, 0.0, 0.5, 0.999, 1.0, 1.3], np.float32)
    expected = np.clip((x.astype(np.float64) + 1) * 127.5, 0, 255).astype(np.uint8)  # torch .to
    np.testing.assert_array_equal(np.asarray(evaluation.adm_uint8(jnp.asarray(x))), expected)
    # Images that came from uint8 map back to their own values despite float32 rounding.
    levels = np.arange(256, dtype=np.uint8)
    back = evaluation.adm_uint8(evaluation.images_from_uint8(levels))
    np.testing.assert_array_equal(np.asarray(back), levels.astype(np.float32))


def test_adm_inception_features_is_adms_pipeline():
    """uint8 truncation, (x - 128) / 128 (the 2015-12-05 graph's Sub/Mul), TF1 resize, then the
    network without its own resize: computed step by step in numpy."""
    params = evaluation.init_inception_params(0)
    rng = np.random.default_rng(5)
    images = rng.uniform(-1.05, 1.05, (2, 32, 32, 3)).astype(np.float32)
    # guided-diffusion's float32 (x + 1) * 127.5 truncated, with adm_uint8's 1e-3-level slack
    levels = np.floor(np.minimum(np.clip((images + np.float32(1)) * np.float32(127.5), 0, 255)
                                 + np.float32(inception_lib.ADM_TRUNCATION_SLACK), 255))
    normalized = (levels.astype(np.float64) - 128.0) / 128.0
    resized = np.stack([_np_resize_bilinear_tf1(im, 299, 299) for im in normalized])
    preprocessed = np.asarray(inception_lib.adm_preprocess(jnp.asarray(images)))
    np.testing.assert_allclose(preprocessed, resized, atol=1e-5)
    want = evaluation.inception_features(params, jnp.asarray(preprocessed), resize=False)
    got = evaluation.adm_inception_features(params, jnp.asarray(images))
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got[1]), np.asarray(want[1]), rtol=1e-5, atol=1e-5)
