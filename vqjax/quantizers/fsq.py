"""Finite scalar quantization (Mentzer et al. 2023, "FSQ: VQ-VAE Made Simple").

Each of d channels is bounded by a shifted tanh to L_i levels and rounded (straight-through), then
divided by L_i // 2. The codebook is implicit: prod(L_i) codes, indices in mixed radix with the first
channel least significant. Bit-exact with the paper's reference code (Appendix A.1):

    half_l = (L - 1) * (1 - eps) / 2;  offset = 0.5 if L even else 0;  shift = tan(offset / half_l)
    bound(z) = tanh(z + shift) * half_l - offset

(vector-quantize-pytorch uses (1 + eps) and atanh instead; the two differ by < 1e-3 before rounding.)
Rounding always runs in float32, since bf16 rounding halves codebook usage in practice.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.quantizers import metrics as metrics_lib
from vqjax.quantizers.base import Quantizer, QuantizerOutput, register
from vqjax.quantizers.estimators import straight_through

# The paper's recommended levels per target codebook size (Table 1 / Sec. 4.1).
LEVELS_FOR_CODEBOOK_SIZE = {
    2**8: (8, 6, 5),
    2**10: (8, 5, 5, 5),
    2**12: (7, 5, 5, 5, 5),
    2**14: (8, 8, 8, 6, 5),
    2**16: (8, 8, 8, 5, 5, 5),
}


def levels_for(codebook_size: int) -> tuple[int, ...]:
    if codebook_size not in LEVELS_FOR_CODEBOOK_SIZE:
        sizes = ", ".join(f"2^{int(math.log2(k))}" for k in LEVELS_FOR_CODEBOOK_SIZE)
        raise ValueError(
            f"fsq: no recommended levels for codebook_size={codebook_size}; pass levels= "
            f"explicitly or use one of {sizes}"
        )
    return LEVELS_FOR_CODEBOOK_SIZE[codebook_size]


@register("fsq")
@dataclasses.dataclass(frozen=True)
class FSQ(Quantizer):
    """Options: `levels` (per-channel level counts) or `codebook_size` (picks the paper's levels);
    `dim` (checked against z); `eps` (1e-3, the paper's); `max_usage_codes` (codebooks up to this
    size report exact usage/perplexity, larger ones per-channel factorized statistics)."""

    levels: tuple[int, ...] | None = None
    codebook_size: int | None = None
    dim: int | None = None
    eps: float = 1e-3
    max_usage_codes: int = 2**20

    def validate(self):
        if self.levels is None and self.codebook_size is None:
            raise ValueError("fsq: give levels=(...) or codebook_size=")
        if self.levels is not None:
            if len(self.levels) == 0 or any(int(l) < 2 for l in self.levels):
                raise ValueError(f"fsq: every entry of levels must be >= 2, got {self.levels}")
            if self.codebook_size is not None and self.codebook_size != math.prod(self.levels):
                raise ValueError(
                    f"fsq: levels={self.levels} give {math.prod(self.levels)} codes but "
                    f"codebook_size={self.codebook_size}; drop one of them or make them agree"
                )
        else:
            object.__setattr__(self, "levels", levels_for(self.codebook_size))
        object.__setattr__(self, "codebook_size", math.prod(self.levels))
        if self.dim is not None and self.dim != len(self.levels):
            raise ValueError(
                f"fsq: dim={self.dim} but levels has {len(self.levels)} entries; FSQ quantizes one "
                "channel per level (project to len(levels) channels first)"
            )

    # -- implicit codebook --------------------------------------------------------------------
    @property
    def _levels_np(self) -> np.ndarray:
        return np.asarray(self.levels, np.int64)

    @property
    def _basis(self) -> np.ndarray:
        return np.concatenate(([1], np.cumprod(self._levels_np[:-1]))).astype(np.int64)

    def input_dim(self, z_dim):
        if z_dim != len(self.levels):
            raise ValueError(
                f"fsq: z has last axis {z_dim} but levels={self.levels} needs {len(self.levels)}"
            )
        return z_dim

    def bound(self, z: jax.Array) -> jax.Array:
        """Bound z (float32) so that rounding gives L_i integer levels per channel."""
        levels = self._levels_np.astype(np.float32)
        half_l = (levels - 1) * (1 - self.eps) / 2
        offset = np.where(self._levels_np % 2 == 1, 0.0, 0.5).astype(np.float32)
        shift = np.tan(offset / half_l).astype(np.float32)
        return jnp.tanh(z + shift) * half_l - offset

    def codes_to_indices(self, codes: jax.Array) -> jax.Array:
        """Normalized codes [..., d] in [-1, 1] -> int32 indices [...]."""
        half_width = (self._levels_np // 2).astype(np.float32)
        digits = jnp.round(codes.astype(jnp.float32) * half_width + half_width).astype(jnp.int32)
        return jnp.sum(digits * self._basis.astype(np.int32), axis=-1).astype(jnp.int32)

    def indices_to_codes(self, indices: jax.Array) -> jax.Array:
        """int indices [...] -> normalized float32 codes [..., d]."""
        indices = jnp.asarray(indices).astype(jnp.int32)[..., None]
        digits = (indices // self._basis.astype(np.int32)) % self._levels_np.astype(np.int32)
        half_width = (self._levels_np // 2).astype(np.float32)
        return (digits.astype(jnp.float32) - half_width) / half_width

    # -- the contract -----------------------------------------------------------------------
    def quantize(self, variables, z, *, rng, train):
        z32 = z.astype(jnp.float32)
        half_width = (self._levels_np // 2).astype(np.float32)
        quantized = straight_through(self.bound(z32), jnp.round(self.bound(z32))) / half_width
        indices = self.codes_to_indices(quantized)
        if self.codebook_size <= self.max_usage_codes:
            metrics = metrics_lib.codebook_metrics(indices, self.codebook_size)
        else:
            digits = jnp.round(quantized * half_width + half_width).astype(jnp.int32)
            metrics = metrics_lib.factorized_metrics(digits, int(max(self.levels)))
        out = QuantizerOutput(indices, jnp.zeros((), jnp.float32), metrics, variables.get("state", {}))
        return quantized, out

    def decode(self, variables, indices):
        return self.indices_to_codes(indices)
