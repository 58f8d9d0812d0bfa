"""LFQ and BSQ: codes and indices, straight-through gradients, and the entropy penalty against a
brute-force numpy computation over every code of the implicit codebook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import quantizers
from vqjax.quantizers.lfq import entropy_group_sizes

NAMES = ("lfq", "bsq")


def _latents(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _apply(q, z, train=True):
    variables = q.init(jax.random.key(0), z)
    return jax.jit(lambda v, z: q.apply(v, z, train=train))(variables, jnp.asarray(z))


# -- brute force -----------------------------------------------------------------------------------
def _all_codes(num_bits):
    """[2^b, b] in {-1, +1}, row a = code of index a (first bit least significant)."""
    return 2.0 * ((np.arange(2**num_bits)[:, None] >> np.arange(num_bits)) & 1) - 1.0


def _softmax_assignment(x, codes, inv_temperature):
    """softmax_c(-inv_temperature |x - c|^2) for every row of x: [N, C], float64."""
    dist = np.sum((x[:, None, :] - codes[None]) ** 2, axis=-1)
    logits = -inv_temperature * dist
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=-1, keepdims=True)


def _entropy(p, axis=-1):
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


def brute_force_entropies(x, inv_temperature, code_scale, group_sizes):
    """(per-sample entropy over all 2^d codes, batch entropy over all 2^d codes,
    sum over groups of the batch entropy of each group's own soft assignment)."""
    x = x.astype(np.float64)
    full = _softmax_assignment(x, _all_codes(x.shape[1]) * code_scale, inv_temperature)
    per_sample = np.mean(_entropy(full))
    joint_batch = _entropy(full.mean(0))
    grouped_batch, start = 0.0, 0
    for size in group_sizes:
        part = x[:, start : start + size]
        p = _softmax_assignment(part, _all_codes(size) * code_scale, inv_temperature)
        grouped_batch += _entropy(p.mean(0))
        start += size
    return per_sample, joint_batch, grouped_batch


# -- entropy ---------------------------------------------------------------------------------------
def test_entropy_group_sizes():
    assert entropy_group_sizes(18, 16) == (9, 9)  # MAGVIT-v2's 2 x 9 bits for 2^18 codes
    assert entropy_group_sizes(16, 16) == (16,)
    assert entropy_group_sizes(7, 4) == (4, 3)
    assert entropy_group_sizes(6, 2) == (2, 2, 2)
    assert entropy_group_sizes(31, 16) == (16, 15)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dim,group_bits", [(6, 16), (6, 2), (7, 4)])
def test_entropy_matches_brute_force(name, dim, group_bits):
    inv_temperature = {"lfq": 1.5, "bsq": 4.0}[name]
    q = quantizers.build(
        name,
        dim=dim,
        entropy_group_bits=group_bits,
        inv_temperature=inv_temperature,
        entropy_loss_weight=0.3,
        commitment_loss_weight=0.7,
        diversity_gamma=1.3,
    )
    z = _latents((3, 40, dim), seed=dim + group_bits, scale=0.7)
    _, out = _apply(q, z)
    x = z.reshape(-1, dim).astype(np.float64)
    code_scale = 1.0
    if name == "bsq":
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
        code_scale = dim**-0.5
    groups = entropy_group_sizes(dim, group_bits)
    per_sample, joint_batch, grouped_batch = brute_force_entropies(
        x, inv_temperature, code_scale, groups
    )
    m = out.metrics
    np.testing.assert_allclose(m["per_sample_entropy"], per_sample, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(m["batch_entropy"], grouped_batch, rtol=2e-5, atol=2e-6)
    if len(groups) == 1:
        np.testing.assert_allclose(m["batch_entropy"], joint_batch, rtol=2e-5, atol=2e-6)
    else:  # the factorized batch entropy bounds the joint one from above
        assert float(m["batch_entropy"]) >= joint_batch - 1e-5
    entropy_loss = per_sample - 1.3 * grouped_batch
    np.testing.assert_allclose(m["entropy_loss"], entropy_loss, rtol=2e-5, atol=5e-6)

    # out.loss is the weighted sum of the raw terms.
    codes = np.where(x >= 0, 1.0, -1.0) * code_scale
    if name == "lfq":
        commitment = np.mean((x - codes) ** 2)
        loss = 0.3 * entropy_loss + 0.7 * commitment
    else:
        commitment = np.mean(np.sum((x - codes) ** 2, axis=-1))
        loss = 0.3 * entropy_loss / inv_temperature + 0.7 * commitment
    np.testing.assert_allclose(m["commitment_loss"], commitment, rtol=1e-5)
    np.testing.assert_allclose(out.loss, loss, rtol=2e-5, atol=5e-6)


def test_lfq_entropy_sharp_temperature_matches_brute_force():
    """The paper's inv_temperature=100: near-one-hot assignments stay accurate."""
    q = quantizers.build("lfq", dim=6, entropy_group_bits=3)
    z = _latents((64, 6), seed=3, scale=0.02)  # |4 * 100 * z| spans ~0..25
    _, out = _apply(q, z)
    per_sample, _, grouped = brute_force_entropies(z, 100.0, 1.0, (3, 3))
    np.testing.assert_allclose(out.metrics["per_sample_entropy"], per_sample, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.metrics["batch_entropy"], grouped, rtol=1e-5)


# -- codes and indices -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_decode_equals_forward_value_and_index_round_trip(name):
    q = quantizers.build(name, codebook_size=2**5)
    assert q.dim == 5 and q.codebook_size == 32
    scale = 1.0 if name == "lfq" else 5**-0.5
    all_codes = (
        _all_codes(5) * scale
    )  # row a = the code of index a, first channel least significant
    random = _latents((30, 5), seed=1)
    random[0] = 0.0  # 0 maps to +1
    random[1, :2] = 0.0
    z = np.concatenate([all_codes, random]).astype(np.float32).reshape(2, 31, 5)
    z_q, out = _apply(q, z)
    assert out.indices.shape == (2, 31) and out.indices.dtype == jnp.int32
    indices = np.asarray(out.indices).reshape(-1)
    np.testing.assert_array_equal(indices[:32], np.arange(32))  # code -> index -> code
    assert indices[32] == 2**5 - 1
    decoded = jax.jit(q.decode)({}, out.indices)
    assert decoded.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(z_q))  # bit for bit
    expected = np.where(z >= 0, 1.0, -1.0) * scale
    np.testing.assert_array_equal(np.asarray(z_q), expected.astype(np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_straight_through_gradient(name):
    q = quantizers.build(name, dim=4)
    z = jnp.asarray(_latents((3, 4), seed=2))
    w = jnp.asarray(_latents((3, 4), seed=4))
    grad = jax.jit(jax.grad(lambda z: jnp.sum(w * q.apply({}, z)[0])))(z)
    if name == "lfq":
        expected = w  # identity
    else:
        # BSQ (bsq-vit's order): straight-through on u = z / |z|, then the 1/sqrt(d) scale, so
        # dL/dz = (I - u u^T) w / (|z| sqrt(d)), in closed form with numpy.
        z64, w64 = np.asarray(z, np.float64), np.asarray(w, np.float64)
        norm = np.linalg.norm(z64, axis=-1, keepdims=True)
        u = z64 / norm
        tangential = w64 - np.sum(u * w64, axis=-1, keepdims=True) * u
        expected = tangential / (norm * np.sqrt(4))
    np.testing.assert_allclose(np.asarray(grad), np.asarray(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_large_codebook_is_memory_bounded(name):
    """d = 24: no [N, 2^24] array (that would be 512 MiB here); factorized usage metrics."""
    q = quantizers.build(name, dim=24)
    assert q.entropy_group_sizes == (12, 12)
    z = jnp.asarray(_latents((8, 24), seed=5))

    def f(z):
        z_q, out = q.apply({}, z, train=True)
        return jnp.sum(z_q) + out.loss, out

    compiled = jax.jit(jax.value_and_grad(f, has_aux=True)).lower(z).compile()
    memory = compiled.memory_analysis()
    if memory is not None:
        assert memory.temp_size_in_bytes + memory.output_size_in_bytes < 16 * 2**20
    (value, out), grad = compiled(z)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))
    # 8 samples: each 12-bit group uses 8 of its 4096 codes (with probability ~1).
    np.testing.assert_allclose(out.metrics["usage"], 8 / 4096)
    np.testing.assert_allclose(out.metrics["perplexity"], 64.0, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(q.decode({}, out.indices)) > 0, np.asarray(z) >= 0)


def test_max_index_bits():
    q = quantizers.build("lfq", dim=31)
    z = jnp.ones((2, 31)).at[1, 30].set(-1.0)
    _, out = _apply(q, z)
    np.testing.assert_array_equal(np.asarray(out.indices), [2**31 - 1, 2**30 - 1])
    np.testing.assert_array_equal(np.asarray(q.decode({}, out.indices)), np.asarray(z))
    for name in NAMES:
        with pytest.raises(ValueError, match="dim=36.*int32"):
            quantizers.build(name, dim=36)


def test_factorized_metrics_match_numpy():
    """2^21 codes > max_usage_codes: usage/perplexity per group (groups of 11 and 10 bits)."""
    q = quantizers.build("lfq", dim=21)
    z = _latents((300, 21), seed=6)
    _, out = _apply(q, z)
    bits = z >= 0
    usages, perplexity = [], 1.0
    for start, size in ((0, 11), (11, 10)):
        idx = (bits[:, start : start + size] * (1 << np.arange(size))).sum(-1)
        counts = np.bincount(idx, minlength=2**size)
        usages.append((counts > 0).mean())
        perplexity *= np.exp(_entropy(counts / counts.sum()))
    np.testing.assert_allclose(out.metrics["usage"], np.mean(usages), rtol=1e-6)
    np.testing.assert_allclose(out.metrics["perplexity"], perplexity, rtol=1e-4)


# -- transformations and dtypes --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_jit_grad_vmap(name):
    """jit(grad(vmap(apply))) in one compile: per-example results, finite gradients."""
    q = quantizers.build(name, dim=6)
    z = jnp.asarray(_latents((2, 3, 6), seed=7, scale=0.05))
    z = z.at[0, 0, 0].set(0.0)

    def objective(z):
        z_q, out = jax.vmap(lambda z: q.apply({}, z, train=True))(z)
        return jnp.sum(z_q) + jnp.sum(out.loss), (z_q, out)

    grad, (z_q, out) = jax.jit(jax.grad(objective, has_aux=True))(z)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert float(jnp.max(jnp.abs(grad - 1.0))) > 0  # the entropy/commitment terms contribute
    assert out.indices.shape == (2, 3) and out.loss.shape == (2,)
    assert all(m.shape == (2,) for m in out.metrics.values())
    np.testing.assert_array_equal(np.asarray(q.decode({}, out.indices)), np.asarray(z_q))
    # Each example's statistics are its own: its per-sample entropy from its own 3 vectors.
    x = np.asarray(z, np.float64)
    scale = 1.0
    if name == "bsq":
        x, scale = x / np.linalg.norm(x, axis=-1, keepdims=True), 6**-0.5
    for i in range(2):
        per_sample, _, batch = brute_force_entropies(x[i], q.inv_temperature, scale, (6,))
        np.testing.assert_allclose(
            out.metrics["per_sample_entropy"][i], per_sample, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(out.metrics["batch_entropy"][i], batch, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_inputs(name):
    q = quantizers.build(name, dim=6)
    z = jnp.asarray(_latents((4, 6), seed=8)).astype(jnp.bfloat16)
    z_q, out = jax.jit(lambda z: q.apply({}, z, train=True))(z)
    assert z_q.dtype == jnp.bfloat16 and out.loss.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(z_q, np.float32))) and np.isfinite(float(out.loss))
    np.testing.assert_array_equal(
        np.asarray(z_q, np.float32),
        np.asarray(q.decode({}, out.indices)).astype(jnp.bfloat16).astype(np.float32),
    )


# -- options and inputs ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "options,option",
    [
        ({}, "dim"),
        ({"dim": 0}, "dim"),
        ({"dim": 32}, "dim"),
        ({"codebook_size": 48}, "codebook_size"),
        ({"codebook_size": 1}, "codebook_size"),
        ({"dim": 5, "codebook_size": 64}, "codebook_size"),
        ({"dim": 4, "inv_temperature": 0.0}, "inv_temperature"),
        ({"dim": 4, "entropy_loss_weight": -1.0}, "entropy_loss_weight"),
        ({"dim": 4, "commitment_loss_weight": float("nan")}, "commitment_loss_weight"),
        ({"dim": 4, "diversity_gamma": -0.5}, "diversity_gamma"),
        ({"dim": 4, "entropy_group_bits": 0}, "entropy_group_bits"),
        ({"dim": 4, "entropy_group_bits": 17}, "entropy_group_bits"),
        ({"dim": 4, "max_usage_codes": 0}, "max_usage_codes"),
        ({"dim": 4, "bits": 4}, "bits"),
    ],
)
def test_bad_options(name, options, option):
    with pytest.raises(ValueError, match=option):
        quantizers.build(name, **options)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_latent_dim(name):
    q = quantizers.build(name, dim=6)
    with pytest.raises(ValueError, match="dim=6"):
        q.apply({}, jnp.zeros((2, 5)))
    with pytest.raises(TypeError):
        q.apply({}, jnp.zeros((2, 6), jnp.int32))
