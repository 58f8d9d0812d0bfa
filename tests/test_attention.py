"""The one attention function (jax.nn.dot_product_attention) equals Flax's einsum attention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax.models import layers


def qkv(seed=0, shape=(2, 17, 4, 16), dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(k, shape, dtype) * 2 for k in keys]


@pytest.mark.parametrize("with_mask", [False, True])
def test_equals_flax_attention_in_float32(with_mask):
    q, k, v = qkv()
    mask = None
    if with_mask:  # [B, heads, N, N], as MultiHeadDotProductAttention passes it
        mask = jax.random.bernoulli(jax.random.key(3), 0.7, (2, 1, 17, 17)) | jnp.eye(17, dtype=bool)
    ours = layers.dot_product_attention(q, k, v, mask=mask)
    reference = nn.dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_bfloat16_keeps_the_softmax_in_float32():
    q, k, v = qkv(dtype=jnp.bfloat16)
    ours = layers.dot_product_attention(q, k, v, dtype=jnp.bfloat16)
    assert ours.dtype == jnp.bfloat16
    exact = nn.dot_product_attention(*(x.astype(jnp.float32) for x in (q, k, v)))
    np.testing.assert_allclose(np.asarray(ours, np.float32), exact, atol=3e-2)


def test_dropout_in_training_uses_the_einsum_path():
    q, k, v = qkv()
    rng = jax.random.key(7)
    ours = layers.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=0.3,
                                        deterministic=False)
    reference = nn.dot_product_attention(q, k, v, dropout_rng=rng, dropout_rate=0.3,
                                         deterministic=False)
    np.testing.assert_array_equal(ours, reference)


def test_backend_choice():
    assert layers.attention_backend("auto", jnp.float32, 64) == "xla"  # CPU here
    assert layers.attention_backend("xla", jnp.bfloat16, 64) == "xla"
    with pytest.raises(ValueError, match="attention implementation 'flash'"):
        layers.attention_backend("flash", jnp.float32, 64)


def test_transformer_output_is_unchanged():
    """Same params, same outputs as a transformer on Flax's default attention (checkpoints of
    earlier versions keep their meaning)."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 32))
    ours = layers.Transformer(num_layers=2, num_heads=4, mlp_dim=64)
    params = ours.init(jax.random.key(1), x)
    y = ours.apply(params, x)

    calls = []

    def flax_attention(*args, implementation="auto", **kwargs):
        calls.append(implementation)
        return nn.dot_product_attention(*args, **kwargs)

    original = layers.dot_product_attention
    try:
        layers.dot_product_attention = flax_attention
        reference = layers.Transformer(num_layers=2, num_heads=4, mlp_dim=64).apply(params, x)
    finally:
        layers.dot_product_attention = original
    assert calls == ["auto", "auto"]  # the reference really ran Flax's attention in both blocks
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-5)
