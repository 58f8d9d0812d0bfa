"""Sampling from logits: temperature, top-k, top-p (nucleus), classifier-free guidance, bit logits.

Pure functions over the last axis of `logits [..., K]`. Filtered-out entries become -inf, so
`jax.random.categorical` never draws them. `top_k`/`top_p` are static Python values (None = off).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The index convention of vqjax lfq/bsq: bit_i = (code_i > 0), index = sum_i bit_i 2^i.
from vqjax.quantizers.lfq import bits_to_indices, indices_to_bits  # noqa: F401

Array = jax.Array
NEG_INF = -jnp.inf


def top_k_filter(logits: Array, k: int | None) -> Array:
    """Keep the k largest logits of the last axis (ties with the k-th all kept), -inf the rest."""
    if k is None or k >= logits.shape[-1]:
        return logits
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]  # [..., 1]
    return jnp.where(logits < kth_largest, NEG_INF, logits)


def top_p_filter(logits: Array, p: float | None) -> Array:
    """Nucleus filtering: keep the smallest set of most probable entries whose probability sums to
    at least p (always the most probable one; ties with the last kept entry too), -inf the rest.
    """
    if p is None or p >= 1.0:
        return logits
    if not p > 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]  # descending
    sorted_probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    keep = mass_before < p  # a prefix of the sorted order, at least the first entry
    num_kept = jnp.sum(keep, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)  # smallest kept logit
    return jnp.where(logits < threshold, NEG_INF, logits)


def filter_logits(
    logits: Array, temperature=1.0, top_k: int | None = None, top_p: float | None = None
) -> Array:
    """logits / temperature, then top-k, then top-p (float32). temperature 0 means greedy."""
    logits = logits.astype(jnp.float32)
    if isinstance(temperature, (int, float)) and temperature == 0:
        return jnp.where(logits < jnp.max(logits, axis=-1, keepdims=True), NEG_INF, 0.0)
    logits = logits / jnp.asarray(temperature, jnp.float32)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def sample_logits(
    rng: Array, logits: Array, temperature=1.0, top_k: int | None = None,
    top_p: float | None = None,
) -> Array:
    """Draw int32 indices [...] from logits [..., K] after `filter_logits`."""
    filtered = filter_logits(logits, temperature, top_k, top_p)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


def guided_logits(cond: Array, uncond: Array, scale) -> Array:
    """Classifier-free guidance: uncond + scale * (cond - uncond) (scale 1: the conditional)."""
    scale = jnp.asarray(scale, jnp.float32)
    cond, uncond = cond.astype(jnp.float32), uncond.astype(jnp.float32)
    return uncond + scale * (cond - uncond)


def guidance_scale_at(step, num_steps: int, scale, anneal: str = "none") -> Array:
    """The guidance scale at decoding step `step` (0-based).

    "none": `scale` every step. "linear": from 1 (plain conditional) towards `scale` linearly,
    1 + (scale - 1) * (step + 1) / num_steps, reaching `scale` at the last step (weak guidance while
    the layout is decided, full guidance for the details).
    """
    scale = jnp.asarray(scale, jnp.float32)
    if anneal == "none":
        return scale
    if anneal == "linear":
        progress = (jnp.asarray(step, jnp.float32) + 1.0) / num_steps
        return 1.0 + (scale - 1.0) * progress
    raise ValueError(f"unknown guidance anneal {anneal!r}; choose 'none' or 'linear'")


def bit_logits_to_categorical(bit_logits: Array) -> Array:
    """Bit logits [...] (log p(1) - log p(0)) -> two-way logits [..., 2] (index 0: bit 0, 1: bit 1).

    softmax([0, l]) = (1 - sigmoid(l), sigmoid(l)), so sampling bits reuses the categorical sampler
    (temperature and top-p act per bit; top_k=1 is greedy, top_k >= 2 is a no-op).
    """
    bit_logits = bit_logits.astype(jnp.float32)
    return jnp.stack([jnp.zeros_like(bit_logits), bit_logits], axis=-1)


# -- token-level sampling shared by the decoders -------------------------------------------------
PREDICTIONS = ("index", "bits")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
    return prediction


def is_masked(tokens: Array, mask_token_id: int, index_axes: int) -> Array:
    """bool [B, N]: positions holding the mask token (any of a position's indices, for Q > 1)."""
    masked = tokens == mask_token_id
    return jnp.any(masked, axis=-1) if index_axes else masked


def sample_tokens(
    rng: Array, logits: Array, prediction: str, index_axes: int, temperature=1.0,
    top_k: int | None = None, top_p: float | None = None,
) -> tuple[Array, Array]:
    """Sample a token at every position and return (tokens, log-probability of each position).

    logits: "index" [B, N, V] (index_axes 0) or [B, N, Q, V] (index_axes 1); "bits" [B, N, b] or
    [B, N, Q, b] bit logits. Returns tokens int32 [B, N] or [B, N, Q] (bits turned into indices)
    and log p(tokens) [B, N] float32 under the unfiltered logits, summed over a position's indices
    (or bits): the indices (bits) of a position are sampled independently given the context.
    """
    check_prediction(prediction)
    if prediction == "bits":
        categorical = bit_logits_to_categorical(logits)  # [B, N, (Q,) b, 2]
    else:
        categorical = logits.astype(jnp.float32)  # [B, N, (Q,) V]
    draws = sample_logits(rng, categorical, temperature, top_k, top_p)  # [B, N, (Q,) F]
    log_probs = jax.nn.log_softmax(categorical, axis=-1)
    chosen = jnp.take_along_axis(log_probs, draws[..., None], axis=-1)[..., 0]
    if prediction == "bits":
        tokens = bits_to_indices(draws)  # [B, N, (Q,)]
        chosen = jnp.sum(chosen, axis=-1)  # over bits
    else:
        tokens = draws
    if index_axes:
        chosen = jnp.sum(chosen, axis=-1)  # over the Q indices of a position
    return tokens, chosen


def check_tokens(tokens, prediction: str, where: str) -> int:
    """The number of index axes of flat tokens [B, N] (0) or [B, N, Q] (1)."""
    if getattr(tokens, "ndim", None) not in (2, 3):
        raise ValueError(
            f"{where}: tokens must be [B, N] or [B, N, Q] (flattened positions), got shape "
            f"{getattr(tokens, 'shape', None)}"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{where}: tokens must be integers, got {tokens.dtype}")
    check_prediction(prediction)
    return tokens.ndim - 2


def model_logits(
    logits_fn, tokens: Array, labels, guidance_scale, null_label: int | None
) -> Array:
    """logits_fn(tokens, labels), with classifier-free guidance when `guidance_scale` is not None:
    conditional and unconditional (labels = null_label) rows run in one batched call."""
    if guidance_scale is None:
        return logits_fn(tokens, labels).astype(jnp.float32)
    batch = tokens.shape[0]
    null = jnp.full((batch,), null_label, jnp.int32)
    both = logits_fn(
        jnp.concatenate([tokens, tokens], axis=0),
        jnp.concatenate([jnp.asarray(labels, jnp.int32), null], axis=0),
    )
    return guided_logits(both[:batch], both[batch:], guidance_scale)


def check_guidance(guidance_scale, labels, null_label, where: str) -> None:
    if guidance_scale is None:
        return
    if labels is None:
        raise ValueError(f"{where}: classifier-free guidance needs labels")
    if null_label is None:
        raise ValueError(
            f"{where}: classifier-free guidance needs null_label (the model's unconditional "
            "label, MaskGIT.null_label)"
        )
