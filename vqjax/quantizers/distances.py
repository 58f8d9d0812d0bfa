"""Nearest-code search that never materializes [N, K, D] and bounds [N, K] by chunking over K.

Scores are computed in float32 as 2 z.e - |e|^2 (euclidean; the |z|^2 term does not change the argmin)
or z.e (cosine; inputs are l2-normalized here), one matmul per chunk of `chunk_size` codes; a running
(best score, best index) pair is carried across chunks by `lax.scan`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

DEFAULT_CHUNK_SIZE = 8192


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-6) -> Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def _scores(z: Array, codes: Array, cosine: bool) -> Array:
    dots = jnp.dot(z, codes.T, preferred_element_type=jnp.float32)  # [N, C]
    if cosine:
        return dots
    return 2.0 * dots - jnp.sum(codes * codes, axis=-1)[None, :]


def squared_distances(z: Array, codebook: Array) -> Array:
    """|z - e|^2 for every pair: [N, K] (small K only; used by k-means and tests)."""
    z, codebook = z.astype(jnp.float32), codebook.astype(jnp.float32)
    return (
        jnp.sum(z * z, -1, keepdims=True)
        - 2.0 * jnp.dot(z, codebook.T)
        + jnp.sum(codebook * codebook, -1)[None, :]
    )


def nearest_code(
    z: Array,
    codebook: Array,
    *,
    cosine: bool = False,
    chunk_size: int | None = None,
    gumbel_rng: Array | None = None,
    temperature: float = 1.0,
) -> Array:
    """Index of the best code for each row of z [N, D] in codebook [K, D]: int32 [N].

    With `gumbel_rng`, samples codes from softmax(-distance / temperature) instead (Gumbel-max),
    chunk by chunk, which is an exact sample from the full distribution.
    """
    z = jax.lax.stop_gradient(z).astype(jnp.float32)
    codebook = jax.lax.stop_gradient(codebook).astype(jnp.float32)
    if cosine:  # idempotent for inputs that are normalized already
        z, codebook = l2_normalize(z), l2_normalize(codebook)
    num_codes = codebook.shape[0]
    chunk = chunk_size or DEFAULT_CHUNK_SIZE

    def chunk_scores(codes, offset):
        s = _scores(z, codes, cosine)
        if gumbel_rng is not None:
            noise = jax.random.gumbel(jax.random.fold_in(gumbel_rng, offset), s.shape, jnp.float32)
            # distance/T: euclidean scores are -(distance) + const, cosine scores are similarities.
            s = s / temperature + noise
        return s

    if num_codes <= chunk:
        return jnp.argmax(chunk_scores(codebook, 0), axis=-1).astype(jnp.int32)

    num_chunks = -(-num_codes // chunk)
    pad = num_chunks * chunk - num_codes
    padded = jnp.pad(codebook, ((0, pad), (0, 0)))
    valid = jnp.arange(num_chunks * chunk) < num_codes
    chunks = padded.reshape(num_chunks, chunk, -1)
    valid = valid.reshape(num_chunks, chunk)

    def step(carry, inputs):
        best_score, best_index = carry
        codes, mask, i = inputs
        s = jnp.where(mask[None, :], chunk_scores(codes, i), -jnp.inf)
        local = jnp.argmax(s, axis=-1)
        local_score = jnp.take_along_axis(s, local[:, None], axis=-1)[:, 0]
        better = local_score > best_score  # strict: ties keep the lower index, like argmax
        return (
            jnp.where(better, local_score, best_score),
            jnp.where(better, local.astype(jnp.int32) + i * chunk, best_index),
        ), None

    init = (jnp.full((z.shape[0],), -jnp.inf, jnp.float32), jnp.zeros((z.shape[0],), jnp.int32))
    (_, best), _ = jax.lax.scan(step, init, (chunks, valid, jnp.arange(num_chunks)))
    return best
