"""MaskGIT's iterative parallel decoding (Chang et al. 2022, Sec. 3.2; libml/parallel_decode.py).

    out = decode(logits_fn, tokens, rng, mask_token_id=model.mask_token_id, labels=labels)
    out.tokens       # [B, N] (or [B, N, Q]) int32, no mask tokens left
    out.num_masked   # [T, B] masked positions after each step

`logits_fn(tokens [B, N(, Q)], labels [B] or None) -> logits` is any model: "index" logits
[B, N, V] / [B, N, Q, V], or "bits" (MaskBit): tokens are bit-group tokens [B, N, S] / [B, N, Q, S]
(mask id 2^k) and logits [B, N, S, 2^k] / [B, N, Q, S, 2^k], one softmax per group.
`maskgit.sequence_logits_fn` adapts a MaskGIT model. The loop is one `lax.scan` of T steps; call
`decode` inside `jax.jit` (`maskgit.generate` does) so the whole decoding compiles once. Each step
t = 0..T-1:

1. run the model on the current tokens (conditional and unconditional rows in one batch with
   classifier-free guidance: logits = uncond + scale_t * (cond - uncond), or with
   guidance_base="cond" MaskBit's cond + scale_t * (cond - uncond));
2. sample every masked unit (temperature, top-k, top-p); known tokens are kept as they are;
3. confidence = log p(sample) + choice_temperature * (1 - (t+1)/T) * Gumbel noise (known: +inf);
4. re-mask the lowest-confidence sampled units so that
   masked_after(t) = min(floor(N_unknown * schedule((t+1)/T)), masked_before(t) - 1), at least 0,
   and 0 after the last step. N_unknown is the per-example number of masked units at the start
   (so editing, which starts partly known, follows the same schedule over its unknown region).

The unit of decoding. "index": a position. With several indices per position (rvq depths,
groups), a position is masked when any of its indices is the mask token; all its indices are
sampled (independently given the context) and its confidence is the sum of their log-probabilities.
"bits": a bit group, as MaskBit's `sample`: each of the N*Q*S groups is sampled, scored, kept or
re-masked on its own (counts, num_masked and the schedule are over groups), so a position can be
partly known.

Randomness: step t uses `fold_in(rng, t)`, so a fixed rng gives a fixed sample.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vqjax.sampling import mask_schedule, sampler

Array = jax.Array
LogitsFn = Callable[[Array, Array | None], Array]


class DecodeOutput(NamedTuple):
    tokens: Array  # int32, the tokens' shape ([B, N], [B, N, Q]; bits [B, N, (Q,) S]), no mask ids
    num_masked: Array  # int32 [T, B]: masked units after each step (T = number of steps)
    history: Array | None = None  # int32 [T, *tokens.shape]: tokens after each step


def mask_by_confidence(
    rng: Array, confidence: Array, unknown: Array, mask_len: Array, choice_temperature
) -> Array:
    """bool [B, N]: the `mask_len[b]` unknown positions of lowest confidence + temperature * Gumbel.

    Known positions are never chosen (confidence +inf, and mask_len < number unknown). Ties are
    broken by position, so exactly mask_len[b] positions are masked.
    """
    noise = jax.random.gumbel(rng, confidence.shape, jnp.float32)
    noisy = confidence.astype(jnp.float32) + jnp.asarray(choice_temperature, jnp.float32) * noise
    noisy = jnp.where(unknown, noisy, jnp.inf)
    ranks = jnp.argsort(jnp.argsort(noisy, axis=-1, stable=True), axis=-1, stable=True)
    return ranks < mask_len[:, None]


def decode(
    logits_fn: LogitsFn,
    tokens: Array,
    rng: Array,
    *,
    mask_token_id: int,
    labels: Array | None = None,
    num_steps: int = 8,
    schedule: str = "cosine",
    temperature=1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    choice_temperature=4.5,
    guidance_scale=None,
    guidance_anneal: str = "none",
    guidance_base: str = "uncond",
    null_label: int | None = None,
    prediction: str = "index",
    return_history: bool = False,
) -> DecodeOutput:
    """Decode the masked units of `tokens` in `num_steps` parallel steps (see module docstring).

    tokens: int [B, N] or [B, N, Q] ("index"), [B, N, S] or [B, N, Q, S] ("bits" group tokens);
    units to generate hold `mask_token_id` (all masked to generate from scratch; some known to
    edit). labels: int [B] or None (passed to logits_fn).
    temperature: of the token sampling (0: greedy); top_k / top_p: static filters (None: off),
    per index or per group softmax.
    choice_temperature: scale of the Gumbel noise on the confidence, annealed by (1 - (t+1)/T).
    guidance_scale: None (no guidance, one forward per step) or a scale (may be traced); needs
    labels and null_label. guidance_base: "uncond" (uncond + s (cond - uncond)) or "cond"
    (MaskBit: cond + s (cond - uncond)). guidance_anneal: "none", "linear" or "cosine<p>"
    (MaskBit's power-cosine): from the conditional model to the scale over the steps.
    prediction: "index" or "bits" (the unit: position or bit group). `schedule`: a mask_schedule
    method.
    """
    index_axes = sampler.check_tokens(tokens, prediction, "decode")
    if int(num_steps) < 1:
        raise ValueError(f"decode: num_steps must be >= 1, got {num_steps}")
    mask_schedule.check_method(schedule)
    sampler.check_guidance(guidance_scale, labels, null_label, "decode", guidance_base,
                           guidance_anneal)
    num_steps = int(num_steps)
    tokens = tokens.astype(jnp.int32)
    if prediction == "bits":  # every bit group is a unit: decode them as flat positions
        flat, flat_logits_fn, unflatten = sampler.flatten_units(logits_fn, tokens, index_axes)
        out = decode(
            flat_logits_fn, flat, rng, mask_token_id=mask_token_id, labels=labels,
            num_steps=num_steps, schedule=schedule, temperature=temperature, top_k=top_k,
            top_p=top_p, choice_temperature=choice_temperature, guidance_scale=guidance_scale,
            guidance_anneal=guidance_anneal, guidance_base=guidance_base, null_label=null_label,
            prediction="index", return_history=return_history,
        )
        history = None if out.history is None else unflatten(out.history)
        return DecodeOutput(unflatten(out.tokens), out.num_masked, history)
    initial_unknown = jnp.sum(sampler.is_masked(tokens, mask_token_id, index_axes), axis=-1)  # [B]

    def step(current, t):
        unknown = sampler.is_masked(current, mask_token_id, index_axes)  # [B, N]
        scale = None
        if guidance_scale is not None:
            scale = sampler.guidance_scale_at(
                t, num_steps, guidance_scale, guidance_anneal, guidance_base
            )
        logits = sampler.model_logits(
            logits_fn, current, labels, scale, null_label, guidance_base
        )
        sample_rng, choice_rng = jax.random.split(jax.random.fold_in(rng, t))
        sampled, log_probs = sampler.sample_tokens(
            sample_rng, logits, index_axes, temperature, top_k, top_p
        )
        unknown_tokens = unknown[..., None] if index_axes else unknown
        sampled = jnp.where(unknown_tokens, sampled, current)

        # How many positions stay masked after this step.
        scheduled = mask_schedule.num_masked_after_step(t, num_steps, initial_unknown, schedule)
        masked_before = jnp.sum(unknown, axis=-1)  # [B]
        mask_len = jnp.maximum(jnp.minimum(scheduled, masked_before - 1), 0)
        mask_len = jnp.where(t == num_steps - 1, 0, mask_len)

        ratio = (t + 1.0) / num_steps
        remask = mask_by_confidence(
            choice_rng, log_probs, unknown, mask_len, choice_temperature * (1.0 - ratio)
        )
        remask_tokens = remask[..., None] if index_axes else remask
        new = jnp.where(remask_tokens, jnp.int32(mask_token_id), sampled)
        num_masked = jnp.sum(sampler.is_masked(new, mask_token_id, index_axes), axis=-1)
        return new, (num_masked.astype(jnp.int32), new if return_history else None)

    final, (num_masked, history) = jax.lax.scan(step, tokens, jnp.arange(num_steps))
    return DecodeOutput(final, num_masked, history)
