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
    guidance_base: str = "uncond",
    null_label: int | None = None,
    prediction: str = "index",
    return_history: bool = False,
) -> DecodeOutput:
    """Fill the masked positions of `tokens` [B, N(, Q)] one at a time, in raster order.

    Options as in `parallel_decode.decode` (the guidance anneal runs over the N positions). Bits
    mode (group tokens [B, N, (Q,) S]): all the groups of a position are sampled at its step (N
    forwards, like index mode). Returns DecodeOutput with num_masked [N, B] (masked positions;
    and history [N, *tokens.shape] if asked).
    """
    index_axes = sampler.check_tokens(tokens, prediction, "autoregressive_decode")
    sampler.check_guidance(guidance_scale, labels, null_label, "autoregressive_decode",
                           guidance_base, guidance_anneal)
    tokens = tokens.astype(jnp.int32)
    num_positions = tokens.shape[1]
    if index_axes > 1:  # bits [B, N, Q, S]: a position's Q*S groups as its indices
        group_shape = tokens.shape[2:]
        inner_fn = logits_fn

        def logits_fn(flat, labels):  # noqa: F811 (the same model over [B, N, Q*S])
            logits = inner_fn(flat.reshape(*flat.shape[:2], *group_shape), labels)
            return logits.reshape(*flat.shape, logits.shape[-1])

        out = autoregressive_decode(
            logits_fn, tokens.reshape(*tokens.shape[:2], -1), rng, mask_token_id=mask_token_id,
            labels=labels, temperature=temperature, top_k=top_k, top_p=top_p,
            guidance_scale=guidance_scale, guidance_anneal=guidance_anneal,
            guidance_base=guidance_base, null_label=null_label, prediction="index",
            return_history=return_history,
        )
        history = out.history
        if history is not None:
            history = history.reshape(*history.shape[:3], *group_shape)
        return DecodeOutput(out.tokens.reshape(tokens.shape), out.num_masked, history)

    def step(current, position):
        scale = None
        if guidance_scale is not None:
            scale = sampler.guidance_scale_at(
                position, num_positions, guidance_scale, guidance_anneal, guidance_base
            )
        logits = sampler.model_logits(
            logits_fn, current, labels, scale, null_label, guidance_base
        )
        logits = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=True)
        sampled, _ = sampler.sample_tokens(
            jax.random.fold_in(rng, position), logits, index_axes, temperature, top_k, top_p,
        )  # [B, 1(, Q)]
        old = jax.lax.dynamic_index_in_dim(current, position, axis=1, keepdims=True)
        new_column = jnp.where(old == mask_token_id, sampled, old)  # known entries kept
        new = jax.lax.dynamic_update_index_in_dim(current, new_column, position, axis=1)
        num_masked = jnp.sum(sampler.is_masked(new, mask_token_id, index_axes), axis=-1)
        return new, (num_masked.astype(jnp.int32), new if return_history else None)

    final, (num_masked, history) = jax.lax.scan(step, tokens, jnp.arange(num_positions))
    return DecodeOutput(final, num_masked, history)
