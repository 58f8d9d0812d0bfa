"""Codebook health metrics: usage, perplexity, dead codes.

All are plain reductions over the (global) batch, so under `jit` on sharded arrays they are computed
over every device's examples at once: 1 device and 8 devices report the same numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def code_counts(indices: Array, codebook_size: int, weights: Array | None = None) -> Array:
    """How many times each code occurs in `indices` (any shape): float32 [codebook_size].

    `weights` (optional) weighs each index: the shape of `indices`, or a prefix of it broadcast
    over the rest (a per-image mask [B] for indices [B, h, w(, Q)]: every index axis counted)."""
    flat = indices.reshape(-1)
    if weights is None:
        ones = jnp.ones(flat.shape, jnp.float32)
    else:
        weights = weights.reshape(weights.shape + (1,) * (indices.ndim - weights.ndim))
        ones = jnp.broadcast_to(weights, indices.shape).reshape(-1).astype(jnp.float32)
    return jnp.zeros((codebook_size,), jnp.float32).at[flat].add(ones)


def usage_from_counts(counts: Array) -> Array:
    """Fraction of codes used at least once."""
    return jnp.mean((counts > 0).astype(jnp.float32))


def perplexity_from_counts(counts: Array) -> Array:
    """exp(entropy) of the empirical code distribution: the effective number of codes in use."""
    probs = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0))
    return jnp.exp(entropy)


def codebook_metrics(indices: Array, codebook_size: int) -> dict[str, Array]:
    """`usage` and `perplexity` of a batch of indices into a codebook of `codebook_size`."""
    counts = code_counts(indices, codebook_size)
    return {"usage": usage_from_counts(counts), "perplexity": perplexity_from_counts(counts)}


def dead_code_count(cluster_size: Array, threshold: float) -> Array:
    """Codes whose EMA assignment count is below `threshold` (float32 scalar)."""
    return jnp.sum((cluster_size < threshold).astype(jnp.float32))


def factorized_metrics(group_indices: Array, group_size: int) -> dict[str, Array]:
    """Usage/perplexity for an implicit codebook too large to count (e.g. LFQ with 2^36 codes).

    `group_indices` [..., G] index G independent factors of `group_size` codes each; the full
    codebook is their product. `usage` is the mean usage of the factors and `perplexity` the product
    of the factors' perplexities (exact when the factors are independent, an upper bound otherwise).
    """
    groups = group_indices.reshape(-1, group_indices.shape[-1])
    counts = jax.vmap(lambda idx: code_counts(idx, group_size), in_axes=1)(groups)  # [G, size]
    usage = jnp.mean(jax.vmap(usage_from_counts)(counts))
    perplexity = jnp.prod(jax.vmap(perplexity_from_counts)(counts))
    return {"usage": usage, "perplexity": perplexity}
