"""FSQ against a numpy port of the paper's reference code (Mentzer et al. 2023, Appendix A.1)."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import quantizers
from vqjax.quantizers.fsq import LEVELS_FOR_CODEBOOK_SIZE


class ReferenceFSQ:
    """The paper's reference implementation, transcribed to numpy float32."""

    def __init__(self, levels, eps=1e-3):
        self.levels = np.asarray(levels)
        self.eps = eps
        self.basis = np.concatenate(([1], np.cumprod(self.levels[:-1]))).astype(np.uint32)

    def bound(self, z):
        half_l = (self.levels - 1) * (1 - self.eps) / 2
        offset = np.where(self.levels % 2 == 1, 0.0, 0.5)
        shift = np.tan(offset / half_l)
        return (np.tanh(z + shift.astype(np.float32)) * half_l.astype(np.float32)
                - offset.astype(np.float32))

    def quantize(self, z):
        half_width = self.levels // 2
        return np.round(self.bound(z)) / half_width.astype(np.float32)

    def codes_to_indexes(self, zhat):
        half_width = self.levels // 2
        zhat = zhat * half_width + half_width
        # The reference truncates with astype(uint32) here, which is off by one whenever float32
        # rounding leaves a digit at k - 1e-7 (e.g. L = 7, half width 3). vqjax rounds, as
        # vector-quantize-pytorch does; the codes themselves are bit-exact either way.
        return (np.round(zhat) * self.basis).sum(axis=-1).astype(np.uint32)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 5, 5, 5, 5), (8, 6, 5), (2, 3, 4)])
def test_matches_paper_reference(levels):
    ref = ReferenceFSQ(levels)
    q = quantizers.build("fsq", levels=levels)
    z = np.random.default_rng(0).normal(size=(512, len(levels))).astype(np.float32) * 3
    variables = q.init(jax.random.key(0), z)
    z_q, out = jax.jit(q.apply)(variables, z)
    np.testing.assert_allclose(np.asarray(q.bound(jnp.asarray(z))), ref.bound(z), atol=2e-6)
    np.testing.assert_array_equal(np.asarray(z_q), ref.quantize(z))
    np.testing.assert_array_equal(np.asarray(out.indices), ref.codes_to_indexes(ref.quantize(z)))


@pytest.mark.parametrize("size,levels", sorted(LEVELS_FOR_CODEBOOK_SIZE.items()))
def test_paper_level_sets_and_index_round_trip(size, levels):
    q = quantizers.build("fsq", codebook_size=size)
    assert q.levels == levels
    assert 0.75 * size < np.prod(levels) < 1.1 * size  # the paper's sizes are approximate
    indices = jnp.arange(q.codebook_size)
    codes = q.decode({}, indices)
    assert codes.shape == (q.codebook_size, len(levels))
    np.testing.assert_array_equal(np.asarray(q.codes_to_indices(codes)), np.arange(q.codebook_size))
    # Every code is distinct and lies in [-1, 1].
    assert len({tuple(c) for c in np.asarray(codes).tolist()}) == q.codebook_size
    assert float(jnp.max(jnp.abs(codes))) <= 1.0


def test_every_code_reachable_and_first_dim_least_significant():
    q = quantizers.build("fsq", levels=(3, 4))
    expected = [(d0, d1) for d1 in range(4) for d0 in range(3)]  # index = d0 + 3 * d1
    codes = np.asarray(q.decode({}, jnp.arange(12)))
    digits = [tuple(int(round(c * (l // 2) + l // 2)) for c, l in zip(code, (3, 4))) for code in codes]
    assert digits == expected
    # Quantizing the code values' pre-images hits every index.
    grid = np.array(list(itertools.product(np.linspace(-4, 4, 41), repeat=2)), np.float32)
    _, out = q.apply({}, grid)
    assert set(np.asarray(out.indices).tolist()) == set(range(12))


def test_straight_through_gradient_is_bound_derivative():
    levels = (8, 5, 5, 5)
    q = quantizers.build("fsq", levels=levels)
    z = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    grad = jax.grad(lambda z: jnp.sum(q.apply({}, z)[0]))(jnp.asarray(z))
    ref = ReferenceFSQ(levels)
    half_l = (ref.levels - 1) * (1 - ref.eps) / 2
    shift = np.tan(np.where(ref.levels % 2 == 1, 0.0, 0.5) / half_l)
    expected = (1 - np.tanh(z + shift) ** 2) * half_l / (ref.levels // 2)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)


def test_bf16_rounds_in_float32():
    q = quantizers.build("fsq", levels=(8, 8, 8, 5, 5, 5))
    z = jax.random.normal(jax.random.key(0), (4096, 6), jnp.bfloat16) * 2
    z_q, out = q.apply({}, z)
    assert z_q.dtype == jnp.bfloat16
    _, out32 = q.apply({}, z.astype(jnp.float32))
    np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(out32.indices))
    chex.assert_trees_all_close(out.metrics, out32.metrics)


def test_metrics_usage_and_perplexity():
    q = quantizers.build("fsq", levels=(3, 3))
    z = np.zeros((10, 2), np.float32)  # all map to the centre code
    _, out = q.apply({}, z)
    assert float(out.metrics["usage"]) == pytest.approx(1 / 9)
    assert float(out.metrics["perplexity"]) == pytest.approx(1.0)
    grid = np.array(list(itertools.product([-3.0, 0.0, 3.0], repeat=2)), np.float32)
    _, out = q.apply({}, grid)
    assert float(out.metrics["usage"]) == pytest.approx(1.0)
    assert float(out.metrics["perplexity"]) == pytest.approx(9.0, rel=1e-5)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="levels=.*codebook_size=12"):
        quantizers.build("fsq", levels=(8, 5), codebook_size=12)
    with pytest.raises(ValueError, match="codebook_size=1000"):
        quantizers.build("fsq", codebook_size=1000)
    with pytest.raises(ValueError, match="levels"):
        quantizers.build("fsq", levels=(8, 1))
    with pytest.raises(ValueError, match="'levls'"):
        quantizers.build("fsq", levls=(8, 5))
    q = quantizers.build("fsq", levels=(8, 5, 5, 5))
    with pytest.raises(ValueError, match="last axis 3"):
        q.apply({}, jnp.zeros((2, 3)))
    with pytest.raises(TypeError, match="floating"):
        q.apply({}, jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="dim=5"):
        quantizers.build("fsq", levels=(8, 5, 5, 5), dim=5)
