"""Sampling from logits: temperature, top-k, top-p (nucleus), classifier-free guidance, bit groups.

Pure functions over the last axis of `logits [..., K]`. Filtered-out entries become -inf, so
`jax.random.categorical` never draws them. `top_k`/`top_p` are static Python values (None = off).
"""

from __future__ import annotations

import math

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


GUIDANCE_BASES = ("uncond", "cond")


def check_guidance_base(base: str) -> str:
    if base not in GUIDANCE_BASES:
        raise ValueError(f"unknown guidance_base {base!r}; choose one of {GUIDANCE_BASES}")
    return base


def guided_logits(cond: Array, uncond: Array, scale, base: str = "uncond") -> Array:
    """Classifier-free guidance. base "uncond" (MaskGIT/Muse): uncond + scale * (cond - uncond),
    scale 1 is the conditional model. base "cond" (MaskBit's `sample`): cond + scale * (cond -
    uncond), scale 0 is the conditional model; the same as "uncond" with scale + 1."""
    check_guidance_base(base)
    scale = jnp.asarray(scale, jnp.float32)
    cond, uncond = cond.astype(jnp.float32), uncond.astype(jnp.float32)
    start = uncond if base == "uncond" else cond
    return start + scale * (cond - uncond)


def check_guidance_anneal(anneal: str) -> float | None:
    """None for "none" / "linear", the power p of "cosine<p>" ("cosine": p = 1); else ValueError."""
    if anneal in ("none", "linear"):
        return None
    if isinstance(anneal, str) and anneal.startswith("cosine"):
        try:
            power = float(anneal[len("cosine"):] or 1.0)
        except ValueError:
            power = -1.0
        if power > 0 and math.isfinite(power):
            return power
    raise ValueError(
        f"unknown guidance anneal {anneal!r}; choose 'none', 'linear' or 'cosine<p>' with p > 0 "
        "(MaskBit's power-cosine, e.g. 'cosine3')"
    )


def guidance_scale_at(step, num_steps: int, scale, anneal: str = "none",
                      base: str = "uncond") -> Array:
    """The guidance scale at decoding step `step` (0-based), annealed from the plain conditional
    model's scale c (1 with base "uncond", 0 with base "cond") towards `scale`.

    "none": `scale` every step. "linear": c + (scale - c) * (step + 1) / num_steps, reaching
    `scale` at the last step (weak guidance while the layout is decided, full guidance for the
    details). "cosine<p>" (MaskBit's power-cosine, its `guidance_annealing="cosine"` with
    `scale_pow=p`): c + (scale - c) * (1 - cos(pi (step / num_steps)^p)) / 2, c at the first step.
    """
    scale = jnp.asarray(scale, jnp.float32)
    power = check_guidance_anneal(anneal)
    if anneal == "none":
        return scale
    conditional = 1.0 if check_guidance_base(base) == "uncond" else 0.0
    if anneal == "linear":
        progress = (jnp.asarray(step, jnp.float32) + 1.0) / num_steps
    else:
        progress = jnp.asarray(step, jnp.float32) / num_steps
        progress = 0.5 * (1.0 - jnp.cos(jnp.pi * progress ** jnp.float32(power)))
    return conditional + (scale - conditional) * progress


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
    rng: Array, logits: Array, index_axes: int, temperature=1.0,
    top_k: int | None = None, top_p: float | None = None,
) -> tuple[Array, Array]:
    """Sample a token at every position and return (tokens, log-probability of each position).

    logits [B, N, V] (index_axes 0) or [B, N, Q, V] (index_axes 1). Returns tokens int32 [B, N] or
    [B, N, Q] and log p(tokens) [B, N] float32 under the unfiltered logits, summed over a
    position's indices: the indices of a position are sampled independently given the context.
    """
    categorical = logits.astype(jnp.float32)  # [B, N, (Q,) V]
    tokens = sample_logits(rng, categorical, temperature, top_k, top_p)  # [B, N, (Q,)]
    log_probs = jax.nn.log_softmax(categorical, axis=-1)
    chosen = jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    if index_axes:
        chosen = jnp.sum(chosen, axis=-1)  # over the Q indices of a position
    return tokens, chosen


def check_tokens(tokens, prediction: str, where: str) -> int:
    """The number of index axes of flat tokens: "index" [B, N] (0) or [B, N, Q] (1); "bits" group
    tokens [B, N, S] (1) or [B, N, Q, S] (2)."""
    check_prediction(prediction)
    ranks = (2, 3) if prediction == "index" else (3, 4)
    if getattr(tokens, "ndim", None) not in ranks:
        layouts = "[B, N] or [B, N, Q]" if prediction == "index" else "[B, N, S] or [B, N, Q, S]"
        raise ValueError(
            f"{where}: {prediction} tokens must be {layouts} (flattened positions), got shape "
            f"{getattr(tokens, 'shape', None)}"
        )
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"{where}: tokens must be integers, got {tokens.dtype}")
    return tokens.ndim - 2


def flatten_units(logits_fn, tokens: Array, index_axes: int):
    """Bits mode's decoding units are the bit groups: group tokens [B, N, (Q,) S] -> flat tokens
    [B, N*Q*S] (one "position" per group), a logits_fn over them returning [B', N*Q*S, 2^k], and
    `unflatten` mapping flat tokens [..., B, N*Q*S] back to the group layout."""
    batch, num_positions = tokens.shape[:2]
    tail = tokens.shape[2:]
    flat = tokens.reshape(batch, -1)

    def flat_logits_fn(flat_tokens, labels):
        rows = flat_tokens.shape[0]  # 2B with guidance
        logits = logits_fn(flat_tokens.reshape(rows, num_positions, *tail), labels)
        return logits.reshape(rows, flat.shape[1], logits.shape[-1])

    def unflatten(values):
        return values.reshape(*values.shape[:-1], num_positions, *tail)

    return flat, flat_logits_fn, unflatten


def model_logits(
    logits_fn, tokens: Array, labels, guidance_scale, null_label: int | None,
    guidance_base: str = "uncond",
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
    return guided_logits(both[:batch], both[batch:], guidance_scale, guidance_base)


def check_guidance(guidance_scale, labels, null_label, where: str,
                   guidance_base: str = "uncond", guidance_anneal: str = "none") -> None:
    check_guidance_base(guidance_base)
    check_guidance_anneal(guidance_anneal)
    if guidance_scale is None:
        return
    if labels is None:
        raise ValueError(f"{where}: classifier-free guidance needs labels")
    if null_label is None:
        raise ValueError(
            f"{where}: classifier-free guidance needs null_label (the model's unconditional "
            "label, MaskGIT.null_label)"
        )
