"""Lookup-free quantization (Yu et al. 2023, MAGVIT-v2, "Language Model Beats Diffusion").

Each of d channels is quantized to its sign: code_i = +1 if z_i >= 0 else -1 (straight-through). The
codebook {-1, +1}^d is implicit (2^d codes); the index of a code is sum_i bit_i 2^i with
bit_i = (code_i > 0), the first channel least significant, as int32 (so d <= 31: larger d is
rejected at build time; `build("grouped", inner="lfq", ...)` gives per-group indices instead).

The entropy penalty (MAGVIT-v2 Sec. 3.1) uses a soft assignment over the codes,
p(c | z) = softmax_c(-inv_temperature * |z - c|^2). Because every code has |c|^2 = d, this is
softmax_c(2 inv_temperature z.c), which factorizes over the bits:
p(bit_i = +1 | z) = sigmoid(4 inv_temperature z_i). Hence

    per-sample entropy  H[p(c | z)] = sum_i H_binary(sigmoid(4 inv_temperature z_i))   (exact)
    batch entropy       H[mean_z p(c | z)]  ~  sum over groups of bits of H[mean_z p(c_group | z)]

The batch-averaged distribution is a mixture of product distributions, which does not factorize;
like MAGVIT-v2 and BSQ we split the d bits into contiguous groups of at most `entropy_group_bits`
bits and sum the entropies of each group's batch-averaged marginal (exact with one group, an upper
bound of the joint entropy otherwise). Within a group of g bits the marginal is computed exactly
over its 2^g codes, without an [N, 2^g] array: the group's codes split into low and high halves of
bits, whose per-sample distributions P_low [N, 2^(g/2)] and P_high are independent given z, so
mean_z p(c_group | z) = P_high^T P_low / N, one matmul into [2^(g - g/2), 2^(g/2)]. (vector-
quantize-pytorch's LFQ uses the same soft assignment, dropping the constant |z|^2 + |c|^2.)

`bsq.py` shares the helpers below.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vqjax.quantizers import metrics as metrics_lib
from vqjax.quantizers.base import Quantizer, QuantizerOutput, register
from vqjax.quantizers.estimators import straight_through

Array = jax.Array
sg = jax.lax.stop_gradient
HIGHEST = jax.lax.Precision.HIGHEST

MAX_INDEX_BITS = 31  # indices are int32
MAX_ENTROPY_GROUP_BITS = 16


# -- options shared by the sign quantizers (lfq, bsq) ---------------------------------------------
def resolve_num_bits(name: str, dim: int | None, codebook_size: int | None) -> int:
    """The number of bits d from `dim` and/or `codebook_size` (2^d); ValueError names the option."""
    if dim is None and codebook_size is None:
        raise ValueError(f"{name}: give dim= (the number of bits d) or codebook_size= (2**d)")
    if codebook_size is not None:
        if (
            isinstance(codebook_size, bool)
            or not isinstance(codebook_size, (int, np.integer))
            or codebook_size < 2
            or codebook_size & (codebook_size - 1)
        ):
            raise ValueError(
                f"{name}: codebook_size must be a power of two >= 2 (2**dim), got {codebook_size!r}"
            )
        bits = int(codebook_size).bit_length() - 1
        if dim is not None and dim != bits:
            raise ValueError(
                f"{name}: dim={dim} gives 2**{dim} codes but codebook_size={codebook_size} = "
                f"2**{bits}; drop one of them or make them agree"
            )
        dim = bits
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"{name}: dim (the number of bits) must be an integer >= 1, got {dim!r}")
    if dim > MAX_INDEX_BITS:
        groups = next(g for g in range(2, dim + 1) if dim % g == 0 and dim // g <= MAX_INDEX_BITS)
        raise ValueError(
            f"{name}: dim={dim} bits give 2**{dim} codes, whose indices do not fit in int32 (dim "
            f"must be <= {MAX_INDEX_BITS}); for per-group indices quantize in groups instead, e.g. "
            f'build("grouped", groups={groups}, inner={name!r}, '
            f"codebook_size=2**{dim // groups}, dim={dim})"
        )
    return int(dim)


def check_nonnegative(name: str, **options) -> None:
    for option, value in options.items():
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: {option} must be a finite number >= 0, got {value!r}")


def check_sign_options(q) -> None:
    """Validation shared by lfq and bsq (same field names); fills in dim and codebook_size."""
    bits = resolve_num_bits(q.name, q.dim, q.codebook_size)
    object.__setattr__(q, "dim", bits)
    object.__setattr__(q, "codebook_size", 2**bits)
    check_nonnegative(
        q.name,
        entropy_loss_weight=q.entropy_loss_weight,
        commitment_loss_weight=q.commitment_loss_weight,
        diversity_gamma=q.diversity_gamma,
    )
    t = q.inv_temperature
    if not (isinstance(t, (int, float, np.number)) and math.isfinite(t) and t > 0):
        raise ValueError(f"{q.name}: inv_temperature must be a finite number > 0, got {t!r}")
    g = q.entropy_group_bits
    if (
        isinstance(g, bool)
        or not isinstance(g, (int, np.integer))
        or not 1 <= g <= MAX_ENTROPY_GROUP_BITS
    ):
        raise ValueError(
            f"{q.name}: entropy_group_bits must be an integer in [1, {MAX_ENTROPY_GROUP_BITS}], "
            f"got {g!r}"
        )
    m = q.max_usage_codes
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"{q.name}: max_usage_codes must be an integer >= 1, got {m!r}")


def entropy_group_sizes(num_bits: int, max_group_bits: int) -> tuple[int, ...]:
    """Split num_bits into the fewest contiguous groups of <= max_group_bits, sizes within one."""
    num_groups = -(-num_bits // max_group_bits)
    small, extra = divmod(num_bits, num_groups)
    return tuple(small + 1 if g < extra else small for g in range(num_groups))


# -- codes, bits and indices -----------------------------------------------------------------------
def sign_codes(x: Array) -> Array:
    """+1 where x >= 0, -1 elsewhere (float32; 0 maps to +1)."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.float32)


def bits_to_indices(bits: Array) -> Array:
    """bits [..., b] (bool or 0/1, b <= 31) -> int32 [...]: sum_i bit_i 2^i."""
    weights = (1 << np.arange(bits.shape[-1], dtype=np.int64)).astype(np.int32)
    return jnp.sum(bits.astype(jnp.int32) * weights, axis=-1).astype(jnp.int32)


def indices_to_bits(indices: Array, num_bits: int) -> Array:
    """int indices [...] -> bool bits [..., num_bits] (inverse of bits_to_indices)."""
    indices = jnp.asarray(indices).astype(jnp.int32)[..., None]
    return (jnp.right_shift(indices, np.arange(num_bits, dtype=np.int32)) & 1).astype(bool)


@functools.lru_cache(maxsize=None)
def bit_table(num_bits: int) -> np.ndarray:
    """float32 [2^num_bits, num_bits]: row a holds the bits of a (first bit least significant)."""
    codes = np.arange(2**num_bits, dtype=np.int64)[:, None]
    return ((codes >> np.arange(num_bits)) & 1).astype(np.float32)


# -- entropy of the soft assignment ----------------------------------------------------------------
def entropy(probs: Array, axis=None) -> Array:
    """-sum p log p, with 0 log 0 = 0 (finite gradients at p = 0)."""
    positive = probs > 0
    return -jnp.sum(
        jnp.where(positive, probs * jnp.log(jnp.where(positive, probs, 1.0)), 0.0), axis=axis
    )


def binary_entropy(logits: Array) -> Array:
    """Entropy of Bernoulli(sigmoid(logits)), elementwise; accurate for large |logits|."""
    # H = p (-log p) + (1 - p) (-log(1 - p)), with -log p = softplus(-x), -log(1 - p) = softplus(x).
    p_plus, p_minus = jax.nn.sigmoid(logits), jax.nn.sigmoid(-logits)
    return p_plus * jax.nn.softplus(-logits) + p_minus * jax.nn.softplus(logits)


def subcode_probs(logits: Array) -> Array:
    """logits [N, b] (log-odds of each bit being +1) -> [N, 2^b] probability of each sub-code.

    log p(a) = sum_i [bit_i(a) log sigmoid(x_i) + (1 - bit_i(a)) log sigmoid(-x_i)], one matmul with
    the 0/1 bit table (exact sums of small terms, so confident codes keep p close to 1).
    """
    table = bit_table(logits.shape[-1]).T  # [b, 2^b]
    selectors = np.concatenate([table, 1.0 - table], axis=0)  # [2b, 2^b]
    log_bits = jax.nn.log_sigmoid(jnp.concatenate([logits, -logits], axis=-1))  # [N, 2b]
    return jnp.exp(jnp.dot(log_bits, selectors, precision=HIGHEST))


def batch_code_distribution(logits: Array) -> Array:
    """logits [N, g] -> float32 [2^g]: the batch-averaged soft assignment over the group's codes.

    Never forms [N, 2^g]: mean_n P_high[n, h] P_low[n, l] is a [2^(g-g/2), 2^(g/2)] matmul, and
    index h * 2^(g/2) + l is the code whose low bits are l and high bits h.
    """
    num_low = logits.shape[-1] // 2
    p_low = subcode_probs(logits[:, :num_low])  # [N, 2^low]
    p_high = subcode_probs(logits[:, num_low:])  # [N, 2^high]
    avg = jnp.dot(p_high.T, p_low, precision=HIGHEST) / logits.shape[0]  # [2^high, 2^low]
    return avg.reshape(-1)


def grouped_entropy(logits: Array, group_sizes: tuple[int, ...]) -> tuple[Array, Array]:
    """(mean per-sample entropy, summed per-group batch entropy) of the factorized soft assignment.

    logits [N, d]: log-odds that each bit is +1; group_sizes: contiguous bit groups summing to d.
    Groups of equal size are computed together (vmap), so the graph does not grow with d.
    """
    logits = logits.astype(jnp.float32)
    per_sample = jnp.mean(jnp.sum(binary_entropy(logits), axis=-1))
    batch = jnp.zeros((), jnp.float32)
    for size, starts in _groups_by_size(group_sizes):
        parts = jnp.stack([logits[:, s : s + size] for s in starts])  # [G, N, size]
        batch = batch + entropy(jax.vmap(batch_code_distribution)(parts))
    return per_sample, batch


def _groups_by_size(group_sizes: tuple[int, ...]) -> list[tuple[int, list[int]]]:
    """[(size, [start of each group of that size])] for contiguous groups."""
    starts = np.cumsum((0,) + tuple(group_sizes[:-1])).tolist()
    return [
        (size, [s for s, g in zip(starts, group_sizes, strict=True) if g == size])
        for size in sorted(set(group_sizes))
    ]


# -- codebook statistics ---------------------------------------------------------------------------
def bit_metrics(
    bits: Array, group_sizes: tuple[int, ...], max_usage_codes: int
) -> dict[str, Array]:
    """usage/perplexity of bit codes: exact over 2^d codes when 2^d <= max_usage_codes, otherwise
    factorized over the bit groups (`metrics.factorized_metrics`, one call per group size)."""
    num_bits = bits.shape[-1]
    if 2**num_bits <= max_usage_codes:
        return metrics_lib.codebook_metrics(bits_to_indices(bits), 2**num_bits)
    usage_sum = jnp.zeros((), jnp.float32)
    perplexity = jnp.ones((), jnp.float32)
    for size, starts in _groups_by_size(group_sizes):
        group_indices = jnp.stack(
            [bits_to_indices(bits[..., s : s + size]) for s in starts], axis=-1
        )  # [..., groups of this size]
        stats = metrics_lib.factorized_metrics(group_indices, 2**size)
        usage_sum = usage_sum + stats["usage"] * group_indices.shape[-1]
        perplexity = perplexity * stats["perplexity"]
    return {"usage": usage_sum / len(group_sizes), "perplexity": perplexity}


# -- the quantizer ---------------------------------------------------------------------------------
@register("lfq")
@dataclasses.dataclass(frozen=True)
class LFQ(Quantizer):
    """Options: `dim` (number of bits d) or `codebook_size` (2^d; both may be given if they agree);
    `entropy_loss_weight` (0.1); `commitment_loss_weight` (0.25); `diversity_gamma` (1.0, weight of
    the batch entropy); `inv_temperature` (100.0, of the soft assignment); `entropy_group_bits` (16,
    the most bits per entropy group); `max_usage_codes` (2^20: larger codebooks report usage and
    perplexity factorized over the entropy groups).

    out.loss = entropy_loss_weight * (per_sample_entropy - diversity_gamma * batch_entropy)
             + commitment_loss_weight * mean((z - sg(code))^2)   (mean over all elements)
    """

    dim: int | None = None
    codebook_size: int | None = None
    entropy_loss_weight: float = 0.1
    commitment_loss_weight: float = 0.25
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0
    entropy_group_bits: int = MAX_ENTROPY_GROUP_BITS
    max_usage_codes: int = 2**20

    def validate(self):
        check_sign_options(self)

    @property
    def entropy_group_sizes(self) -> tuple[int, ...]:
        return entropy_group_sizes(self.dim, self.entropy_group_bits)

    def quantize(self, variables, z, *, rng, train):
        z32 = z.astype(jnp.float32)
        codes = sign_codes(z32)  # [..., d]
        z_q = straight_through(z32, codes)
        bits = codes > 0
        indices = bits_to_indices(bits)

        logits = 4.0 * self.inv_temperature * z32.reshape(-1, self.dim)  # [N, d]
        per_sample_entropy, batch_entropy = grouped_entropy(logits, self.entropy_group_sizes)
        entropy_loss = per_sample_entropy - self.diversity_gamma * batch_entropy
        commitment_loss = jnp.mean(jnp.square(z32 - sg(codes)))
        loss = (
            self.entropy_loss_weight * entropy_loss + self.commitment_loss_weight * commitment_loss
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
        return jnp.where(indices_to_bits(indices, self.dim), 1.0, -1.0).astype(jnp.float32)
