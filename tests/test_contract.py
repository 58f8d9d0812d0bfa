"""The contract every quantizer follows (vqjax/quantizers/base.py), checked for all of them."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import quantizers

# name -> (options, latent dim). Small sizes: this file runs every quantizer several times.
CONFIGS = {
    "vq": ({"codebook_size": 64}, 8),
    "vq_factorized_cosine": ({"codebook_size": 64, "codebook_dim": 4, "use_cosine_sim": True}, 8),
    "vq_grad_rotation_kmeans": (
        {"codebook_size": 32, "ema_update": False, "rotation_trick": True, "kmeans_init": True,
         "threshold_ema_dead_code": 0.5}, 8),
    "fsq": ({"levels": (8, 5, 5)}, 3),
    "lfq": ({"dim": 6}, 6),
    "bsq": ({"dim": 6}, 6),
    "simvq": ({"codebook_size": 64}, 8),
    "rvq": ({"num_quantizers": 3, "codebook_size": 32}, 8),
    "rvq_shared_dropout": (
        {"num_quantizers": 3, "codebook_size": 32, "shared_codebook": True,
         "quantize_dropout": True}, 8),
    "grouped": ({"groups": 2, "codebook_size": 32}, 8),
    "grouped_fsq": ({"groups": 2, "inner": "fsq", "levels": (5, 5, 5)}, 6),
}


def make(config_name):
    options, dim = CONFIGS[config_name]
    name = config_name.split("_")[0]
    if name not in quantizers.available():
        pytest.skip(f"{name} is not registered")
    return quantizers.build(name, **options), dim


@functools.lru_cache(maxsize=None)
def jitted_apply(q):
    """One compiled apply per quantizer (quantizers are hashable), shared by every test here."""
    return jax.jit(q.apply, static_argnames="train")


@pytest.fixture(params=sorted(CONFIGS))
def quantizer_and_dim(request):
    return make(request.param)


def latents(dim, shape=(2, 8), dtype=jnp.float32, seed=0):
    return jax.random.normal(jax.random.key(seed), (*shape, dim), dtype)


def test_build_gives_frozen_hashable_equal_objects(quantizer_and_dim):
    q, _ = quantizer_and_dim
    options = {k: v for k, v in vars(q).items()}
    assert hash(q) == hash(type(q)(**options))
    assert q == type(q)(**options)
    with pytest.raises(Exception):
        q.codebook_size = 3  # frozen
    assert q.name in quantizers.available()
    assert isinstance(q.codebook_size, int) and q.codebook_size > 1


def test_apply_contract(quantizer_and_dim):
    q, dim = quantizer_and_dim
    z = latents(dim)
    variables = q.init(jax.random.key(1), z)
    assert set(variables) == {"params", "state"}
    z_q, out = jitted_apply(q)(variables, z, rng=jax.random.key(2), train=True)
    assert z_q.shape == z.shape and z_q.dtype == z.dtype
    assert out.indices.dtype == jnp.int32
    assert out.indices.shape == z.shape[:-1] + out.indices.shape[z.ndim - 1:]
    assert out.indices.ndim == z.ndim - 1 + q.index_axes
    assert out.loss.shape == () and out.loss.dtype == jnp.float32
    assert {"usage", "perplexity"} <= set(out.metrics)
    for key, value in out.metrics.items():
        assert value.shape == (), key
        assert np.isfinite(float(value)), key
    assert 0.0 < float(out.metrics["usage"]) <= 1.0
    assert 1.0 <= float(out.metrics["perplexity"]) <= q.codebook_size * (1 + 1e-5)
    if "codebook_size" in vars(q) and q.name in ("vq", "simvq"):
        assert "dead_codes" in out.metrics
    chex.assert_trees_all_equal_structs(out.state, variables["state"])


def test_eval_is_deterministic_keeps_state_and_decodes(quantizer_and_dim):
    q, dim = quantizer_and_dim
    z = latents(dim)
    variables = q.init(jax.random.key(1), z)
    # Let stateful quantizers (k-means init) see one training batch first.
    _, out = jitted_apply(q)(variables, z, rng=jax.random.key(2), train=True)
    variables = {"params": variables["params"], "state": out.state}
    z_q, out = jitted_apply(q)(variables, z)
    jax.tree.map(np.testing.assert_array_equal, out.state, variables["state"])
    z_q2, _ = jitted_apply(q)(variables, z)
    np.testing.assert_array_equal(np.asarray(z_q), np.asarray(z_q2))
    decoded = jax.jit(q.decode)(variables, out.indices)
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(z_q), atol=1e-5)


def test_grad_is_finite_and_reaches_latents(quantizer_and_dim):
    q, dim = quantizer_and_dim
    z = latents(dim)
    variables = q.init(jax.random.key(1), z)

    def loss(params, z):
        z_q, out = q.apply({"params": params, "state": variables["state"]}, z,
                           rng=jax.random.key(3), train=True)
        return jnp.sum(z_q * jnp.arange(dim)) + out.loss

    g_params, g_z = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], z)
    assert np.all(np.isfinite(np.asarray(g_z)))
    assert float(jnp.sum(jnp.abs(g_z))) > 0
    for leaf in jax.tree.leaves(g_params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_vmap_over_a_leading_axis(quantizer_and_dim):
    q, dim = quantizer_and_dim
    z = latents(dim, shape=(3, 2, 4))
    variables = q.init(jax.random.key(1), z[0])
    z_q, out = jax.jit(jax.vmap(lambda z: q.apply(variables, z)))(z)
    z_q_all, out_all = jitted_apply(q)(variables, z)
    np.testing.assert_allclose(np.asarray(z_q), np.asarray(z_q_all), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out.indices), np.asarray(out_all.indices))


def test_bfloat16_inputs(quantizer_and_dim):
    q, dim = quantizer_and_dim
    z = latents(dim, dtype=jnp.bfloat16)
    variables = q.init(jax.random.key(1), z)
    z_q, out = jitted_apply(q)(variables, z, rng=jax.random.key(2), train=True)
    assert z_q.dtype == jnp.bfloat16
    assert np.all(np.isfinite(np.asarray(z_q, np.float32)))
    assert np.isfinite(float(out.loss))


def test_wrong_last_dim_is_a_clear_error(quantizer_and_dim):
    q, dim = quantizer_and_dim
    if getattr(q, "dim", None) is None and q.name not in ("fsq",):
        q = type(q)(**{**vars(q), "dim": dim})
    with pytest.raises(ValueError, match=str(dim + 1)):
        q.init(jax.random.key(0), jnp.zeros((2, dim + 1)))


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as info:
        quantizers.build("nope")
    for name in ("vq", "fsq", "rvq", "grouped"):
        assert name in str(info.value)
