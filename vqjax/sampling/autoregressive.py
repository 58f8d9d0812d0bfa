"""Token-by-token decoding in raster order, for comparison with parallel decoding.

One forward pass of the (bidirectional) model per position: position i is sampled given the tokens
known so far, everything after it still masked. With the same `logits_fn` and sampling options as
`parallel_decode.decode`, this is the "autoregressive" baseline of MaskGIT's speed comparison
(N forward passes instead of T). Known positions (editing) are kept; the model still runs for them,
so the cost is always N forwards. Call it inside `jax.jit`; the loop is one `lax.scan`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vqjax.sampling import sampler
from vqjax.sampling.parallel_decode import DecodeOutput, LogitsFn

Array = jax.Array


def autoregressive_decode(
    logits_fn: LogitsFn,
    tokens: Array,
    rng: Array,
    *,
    mask_token_id: int,
    labels: Array | None = None,
    temperature=1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale=None,
    guidance_anneal: str = "none",
    null_label: int | None = None,
    prediction: str = "index",
    return_history: bool = False,
) -> DecodeOutput:
    """Fill the masked positions of `tokens` [B, N(, Q)] one at a time, in raster order.

    Options as in `parallel_decode.decode` (the guidance anneal runs over the N positions).
    Returns DecodeOutput with num_masked [N, B] (and history [N, B, N(, Q)] if asked).
    """
    index_axes = sampler.check_tokens(tokens, prediction, "autoregressive_decode")
    sampler.check_guidance(guidance_scale, labels, null_label, "autoregressive_decode")
    tokens = tokens.astype(jnp.int32)
    num_positions = tokens.shape[1]

    def step(current, position):
        scale = None
        if guidance_scale is not None:
            scale = sampler.guidance_scale_at(
                position, num_positions, guidance_scale, guidance_anneal
            )
        logits = sampler.model_logits(logits_fn, current, labels, scale, null_label)
        logits = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=True)
        sampled, _ = sampler.sample_tokens(
            jax.random.fold_in(rng, position), logits, prediction, index_axes, temperature,
            top_k, top_p,
        )  # [B, 1(, Q)]
        old = jax.lax.dynamic_index_in_dim(current, position, axis=1, keepdims=True)
        unknown = sampler.is_masked(old, mask_token_id, index_axes)  # [B, 1]
        unknown = unknown[..., None] if index_axes else unknown
        new_column = jnp.where(unknown, sampled, old)
        new = jax.lax.dynamic_update_index_in_dim(current, new_column, position, axis=1)
        num_masked = jnp.sum(sampler.is_masked(new, mask_token_id, index_axes), axis=-1)
        return new, (num_masked.astype(jnp.int32), new if return_history else None)

    final, (num_masked, history) = jax.lax.scan(step, tokens, jnp.arange(num_positions))
    return DecodeOutput(final, num_masked, history)
