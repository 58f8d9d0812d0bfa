"""Codebook usage and perplexity over a whole evaluation set.

    usage = CodebookUsage.for_quantizer(model.built_quantizer())   # or CodebookUsage(1024)
    for batch in eval_batches:
        usage.update(aux.indices, mask=batch["mask"])
    usage.result()   # {"usage": ..., "perplexity": ..., "used_codes": ..., "tokens": ...}

Per-batch usage (vqjax.quantizers.metrics) says how many codes a batch touches; what matters for a
tokenizer is how many it uses over the data set, so the counts are accumulated across batches on
the host, in int64 (float32 counts stop being exact past 2^24 tokens: 50k images x 1024 tokens).

- usage = fraction of codes used at least once; perplexity = exp(entropy) of the empirical code
  distribution, the effective number of codes in use (natural log). `usage_from_counts` and
  `perplexity_from_counts` here are the host (numpy, float64) forms used by every whole-set
  evaluation (the trainers' periodic eval and `launch.evaluate`); the quantizers' per-batch
  metrics inside the jitted step use the traced forms of `vqjax.quantizers.metrics`.
- Multi-index quantizers (`index_axes=1`: rvq depths, grouped sub-codebooks; indices [..., Q]):
  each of the Q codebooks is counted separately; `usage`/`perplexity` are the means over the Q
  codebooks and `usage/q{i}`, `perplexity/q{i}` each one's. `pooled_usage`/`pooled_perplexity`
  count all Q in one histogram, the relevant number for a shared codebook (rvq
  `shared_codebook=True`). Negative indices (rvq depths dropped by quantize dropout) are skipped.
- Implicit codebooks too large to count (LFQ/BSQ with 2^36 codes): count each factor's indices as
  a multi-index of small codebooks instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vqjax.evaluation.host import to_host


class CodebookUsage:
    """Streaming code counts: `update(indices, mask=None)` per batch, `result()` at the end."""

    def __init__(self, codebook_size: int, index_axes: int = 0):
        if codebook_size < 1:
            raise ValueError(f"CodebookUsage: codebook_size must be >= 1, got {codebook_size}")
        if index_axes not in (0, 1):
            raise ValueError(f"CodebookUsage: index_axes must be 0 or 1, got {index_axes}")
        self.codebook_size = int(codebook_size)
        self.index_axes = index_axes
        self.counts: np.ndarray | None = None  # int64 [Q, codebook_size]

    @classmethod
    def for_quantizer(cls, quantizer: Any) -> "CodebookUsage":
        """From a vqjax quantizer: its `codebook_size` and `index_axes`."""
        return cls(quantizer.codebook_size, int(getattr(quantizer, "index_axes", 0)))

    def update(self, indices: Any, mask: Any = None) -> "CodebookUsage":
        """Count `indices` [B, ...] (+ [..., Q] when index_axes=1); `mask` [B] keeps images."""
        idx = np.asarray(to_host(indices))
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"CodebookUsage.update: indices must be integers, got {idx.dtype}")
        if mask is not None:
            keep = np.asarray(to_host(mask)).reshape(-1).astype(bool)
            if keep.shape[0] != idx.shape[0]:
                raise ValueError(f"CodebookUsage.update: mask has {keep.shape[0]} entries for "
                                 f"{idx.shape[0]} images")
            idx = idx[keep]
        num_codebooks = idx.shape[-1] if self.index_axes else 1
        idx = idx.reshape(-1, num_codebooks).astype(np.int64)  # [tokens, Q]
        if idx.size and idx.max() >= self.codebook_size:
            raise ValueError(f"CodebookUsage.update: index {idx.max()} >= codebook_size "
                             f"{self.codebook_size}")
        if self.counts is None:
            self.counts = np.zeros((num_codebooks, self.codebook_size), np.int64)
        elif self.counts.shape[0] != num_codebooks:
            raise ValueError(f"CodebookUsage.update: {num_codebooks} codebooks in this batch, "
                             f"{self.counts.shape[0]} before")
        for q in range(num_codebooks):
            column = idx[:, q]
            self.counts[q] += np.bincount(column[column >= 0], minlength=self.codebook_size)
        return self

    def merge(self, other: "CodebookUsage") -> "CodebookUsage":
        if other.counts is not None:
            self.counts = other.counts.copy() if self.counts is None else self.counts + other.counts
        return self

    def result(self) -> dict[str, float]:
        if self.counts is None:
            raise ValueError("CodebookUsage: no indices accumulated")
        usages = [usage_from_counts(c) for c in self.counts]
        perplexities = [perplexity_from_counts(c) for c in self.counts]
        metrics = {
            "usage": float(np.mean(usages)),
            "perplexity": float(np.mean(perplexities)),
            "used_codes": float(np.mean([np.count_nonzero(c) for c in self.counts])),
            "tokens": float(self.counts[0].sum()),
        }
        if self.counts.shape[0] > 1:
            for q, (u, p) in enumerate(zip(usages, perplexities)):
                metrics[f"usage/q{q}"] = u
                metrics[f"perplexity/q{q}"] = p
            pooled = self.counts.sum(axis=0)
            metrics["pooled_usage"] = usage_from_counts(pooled)
            metrics["pooled_perplexity"] = perplexity_from_counts(pooled)
        return metrics


def usage_from_counts(counts: np.ndarray) -> float:
    """Fraction of codes with a nonzero count."""
    return float(np.count_nonzero(counts) / counts.shape[-1])


def perplexity_from_counts(counts: np.ndarray) -> float:
    """exp(entropy) of counts / sum(counts), float64; 0 for no counts."""
    total = counts.sum()
    if total == 0:
        return 0.0
    probs = counts[counts > 0] / total
    return float(np.exp(-np.sum(probs * np.log(probs))))
