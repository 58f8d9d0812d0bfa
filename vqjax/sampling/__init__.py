"""Sampling from masked token models: mask schedules, MaskGIT parallel decoding, editing.

    from vqjax.sampling import decode, mask_schedule
    out = decode(logits_fn, tokens, rng, mask_token_id=..., labels=..., num_steps=8)

`mask_schedule` (schedules as pure functions), `sampler` (temperature / top-k / top-p, guidance,
bits), `parallel_decode.decode` (T-step MaskGIT decoding in one lax.scan), `autoregressive`
(token-by-token baseline), `editing` (inpainting, outpainting, region edits blended in pixels).
"""

from vqjax.sampling import (  # noqa: F401
    autoregressive,
    editing,
    mask_schedule,
    parallel_decode,
    sampler,
)
from vqjax.sampling.autoregressive import autoregressive_decode  # noqa: F401
from vqjax.sampling.editing import blend, box_mask, edit_image, token_mask_from_pixels  # noqa: F401
from vqjax.sampling.parallel_decode import DecodeOutput, decode  # noqa: F401
