"""Binary spherical quantization (Zhao et al. 2024, "Image and Video Tokenization with Binary
Spherical Quantization").

u = z / |z| on the unit sphere, then q = sign(u) / sqrt(d) (0 maps to +1). As in BSQ's reference
code (bsq-vit `BinarySphericalQuantizer`) the straight-through estimator acts on the unit vector
(sign(u) forward, identity backward) and the result is then scaled by 1/sqrt(d): the gradient that
reaches u is the decoder's gradient times 1/sqrt(d), not the decoder's gradient itself. The implicit
codebook {-1, +1}^d / sqrt(d) lies on the same sphere, so |u - q| <= 2 without any
commitment term (the paper trains with commitment weight 0). Indices are LFQ's: sum_i bit_i 2^i,
int32, d <= 31.

Entropy penalty (BSQ Sec. 3.3) with the soft assignment
p(c | u) = softmax_c(-inv_temperature |u - c|^2) = softmax_c(2 inv_temperature u.c),
which factorizes per bit as p(bit_i = +1 | u) = sigmoid(4 inv_temperature u_i / sqrt(d)):
the per-sample entropy is exact, the codebook entropy is summed over groups of at most
`entropy_group_bits` bits (see `lfq.py`). As in BSQ's reference code the penalty is divided by
inv_temperature, which keeps its gradient scale roughly independent of the temperature, and the
commitment term is |u - sg(q)|^2 summed over channels.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from vqjax.quantizers.base import Quantizer, QuantizerOutput, register
from vqjax.quantizers.distances import l2_normalize
from vqjax.quantizers.estimators import straight_through
from vqjax.quantizers.lfq import (
    MAX_ENTROPY_GROUP_BITS,
    bit_metrics,
    bits_to_indices,
    check_sign_options,
    entropy_group_sizes,
    grouped_entropy,
    indices_to_bits,
    sg,
    sign_codes,
)


@register("bsq")
@dataclasses.dataclass(frozen=True)
class BSQ(Quantizer):
    """Options: `dim` (number of bits d) or `codebook_size` (2^d); `entropy_loss_weight` (0.1,
    BSQ-ViT's codebook weight); `commitment_loss_weight` (0.0, BSQ-ViT's beta); `diversity_gamma`
    (1.0, weight of the codebook entropy); `inv_temperature` (1.0, BSQ's); `entropy_group_bits`
    (16); `max_usage_codes` (2^20).

    out.loss = entropy_loss_weight / inv_temperature
                 * (per_sample_entropy - diversity_gamma * batch_entropy)
             + commitment_loss_weight * mean_tokens |u - sg(q)|^2
    """

    dim: int | None = None
    codebook_size: int | None = None
    entropy_loss_weight: float = 0.1
    commitment_loss_weight: float = 0.0
    diversity_gamma: float = 1.0
    inv_temperature: float = 1.0
    entropy_group_bits: int = MAX_ENTROPY_GROUP_BITS
    max_usage_codes: int = 2**20

    def validate(self):
        check_sign_options(self)

    @property
    def entropy_group_sizes(self) -> tuple[int, ...]:
        return entropy_group_sizes(self.dim, self.entropy_group_bits)

    @property
    def code_scale(self) -> float:
        return float(1.0 / np.sqrt(self.dim))

    def quantize(self, variables, z, *, rng, train):
        u = l2_normalize(z.astype(jnp.float32))  # [..., d] on the unit sphere
        signs = sign_codes(u)
        codes = signs * self.code_scale
        # [..., d]: value sign(u) / sqrt(d); gradient into u scaled by 1 / sqrt(d) (bsq-vit's order)
        z_q = straight_through(u, signs) * self.code_scale
        bits = signs > 0
        indices = bits_to_indices(bits)

        logits = (4.0 * self.inv_temperature * self.code_scale) * u.reshape(-1, self.dim)  # [N, d]
        per_sample_entropy, batch_entropy = grouped_entropy(logits, self.entropy_group_sizes)
        entropy_loss = per_sample_entropy - self.diversity_gamma * batch_entropy
        commitment_loss = jnp.mean(jnp.sum(jnp.square(u - sg(codes)), axis=-1))
        loss = (
            self.entropy_loss_weight / self.inv_temperature * entropy_loss
            + self.commitment_loss_weight * commitment_loss
        )

        metrics = bit_metrics(bits, self.entropy_group_sizes, self.max_usage_codes)
        metrics.update(
            entropy_loss=entropy_loss,
            commitment_loss=commitment_loss,
            per_sample_entropy=per_sample_entropy,
            batch_entropy=batch_entropy,
        )
        out = QuantizerOutput(
            indices, loss.astype(jnp.float32), metrics, variables.get("state", {})
        )
        return z_q, out

    def decode(self, variables, indices):
        signs = jnp.where(indices_to_bits(indices, self.dim), 1.0, -1.0)
        return (signs * self.code_scale).astype(jnp.float32)
