"""Image editing with a masked token model: inpainting, outpainting, class-conditional region edits.

    tokens = tokenizer.encode(image) indices                      # [B, h, w] (or [B, h, w, Q])
    out = edit_image(logits_fn, decode_fn, image, tokens, pixel_mask, rng,
                     mask_token_id=model.mask_token_id, labels=new_labels)
    out.images    # generated inside the mask, the original image outside (blended in pixel space)

The pixel mask (1 = regenerate) is mapped to the token grid: a token is regenerated when any
pixel of its patch is (`token_mask_from_pixels`), so the whole edited region is new. Those tokens
are masked and decoded with `parallel_decode.decode` (the schedule runs over the masked tokens
only), the tokenizer decodes the token grid, and `blend` pastes the generated pixels into the
original image where the pixel mask is set. Inpainting: mask a region inside; outpainting: mask
everything outside a kept region (`box_mask(..., invert=True)`); class-conditional editing: pass
the new class as `labels` (with guidance if the model was trained with label dropout).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from vqjax.sampling import parallel_decode

Array = jax.Array


class EditOutput(NamedTuple):
    images: Array  # [B, H, W, C]: original outside the pixel mask, generated inside (blended)
    generated: Array  # [B, H, W, C]: the tokenizer's decoding of the edited tokens (no blending)
    tokens: Array  # int32, the shape of the input tokens: the edited tokens
    token_mask: Array  # bool [B, h, w]: the tokens that were regenerated


def box_mask(height: int, width: int, top: int, left: int, box_height: int, box_width: int,
             invert: bool = False) -> Array:
    """bool [height, width], True inside the box (outside it with invert=True, for outpainting)."""
    rows = jnp.arange(height)[:, None]
    cols = jnp.arange(width)[None, :]
    inside = (rows >= top) & (rows < top + box_height) & (cols >= left) & (cols < left + box_width)
    return ~inside if invert else inside


def token_mask_from_pixels(pixel_mask: Array, grid: tuple[int, int]) -> Array:
    """Pixel mask [B, H, W] or [H, W] (nonzero = edit) -> token mask bool [B, h, w] or [h, w]:
    a token is masked when any pixel of its (H/h) x (W/w) patch is."""
    pixel_mask = jnp.asarray(pixel_mask)
    height, width = pixel_mask.shape[-2:]
    h, w = grid
    if height % h or width % w:
        raise ValueError(f"pixel mask {height}x{width} is not divisible by the token grid {h}x{w}")
    patches = pixel_mask.reshape(*pixel_mask.shape[:-2], h, height // h, w, width // w)
    return jnp.any(patches != 0, axis=(-3, -1))


def mask_tokens_in_region(tokens: Array, token_mask: Array, mask_token_id: int) -> Array:
    """tokens [B, h, w, ...] with the mask token where token_mask [B, h, w] (or [h, w]) is set
    (all of a position's entries: its Q indices, or its bit groups)."""
    token_mask = jnp.broadcast_to(jnp.asarray(token_mask, bool), tokens.shape[:3])
    token_mask = token_mask.reshape(*token_mask.shape, *([1] * (tokens.ndim - 3)))
    return jnp.where(token_mask, jnp.int32(mask_token_id), tokens.astype(jnp.int32))


def blend(original: Array, generated: Array, pixel_mask: Array) -> Array:
    """pixel_mask * generated + (1 - pixel_mask) * original; pixel_mask [B, H, W] / [H, W] in [0, 1]
    (soft masks feather the seam)."""
    alpha = jnp.asarray(pixel_mask, jnp.float32)[..., None]
    return alpha * generated.astype(jnp.float32) + (1.0 - alpha) * original.astype(jnp.float32)


def edit_image(
    logits_fn: parallel_decode.LogitsFn,
    decode_fn: Callable[[Array], Array],
    image: Array,
    tokens: Array,
    pixel_mask: Array,
    rng: Array,
    *,
    mask_token_id: int,
    labels: Array | None = None,
    **decode_options,
) -> EditOutput:
    """Regenerate the masked region of `image` [B, H, W, C] and blend it into the original.

    tokens: int [B, h, w] or [B, h, w, Q], the tokenizer's indices of `image` (a bits-mode
    MaskGIT: its group tokens `model.model_tokens(indices)`, with prediction="bits" in
    decode_options and a decode_fn that applies `model.token_indices` first). pixel_mask:
    [B, H, W] or [H, W] in [0, 1] (nonzero = regenerate; fractional values feather the blend).
    decode_fn: the tokenizer's token grid -> images (e.g. ViTVQGAN.decode_indices bound to its
    variables). logits_fn takes flat tokens [B, h*w(, Q)] (see `maskgit.sequence_logits_fn`).
    decode_options: passed to `parallel_decode.decode` (num_steps, temperature, guidance_scale...).
    """
    if tokens.ndim not in (3, 4, 5):
        raise ValueError(
            f"edit_image: tokens must be [B, h, w], [B, h, w, Q] or bits mode's group tokens "
            f"[B, h, w, (Q,) S], got {tokens.shape}"
        )
    batch, h, w = tokens.shape[:3]
    token_mask = jnp.broadcast_to(token_mask_from_pixels(pixel_mask, (h, w)), (batch, h, w))
    masked = mask_tokens_in_region(tokens, token_mask, mask_token_id)
    flat = masked.reshape(batch, h * w, *tokens.shape[3:])
    out = parallel_decode.decode(
        logits_fn, flat, rng, mask_token_id=mask_token_id, labels=labels, **decode_options
    )
    edited = out.tokens.reshape(tokens.shape)
    generated = decode_fn(edited)
    pixel_mask = jnp.broadcast_to(jnp.asarray(pixel_mask, jnp.float32), image.shape[:3])
    return EditOutput(blend(image, generated, pixel_mask), generated, edited, token_mask)
