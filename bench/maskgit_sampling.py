"""MaskGIT sampling benchmark: 8-step parallel decoding against token-by-token decoding.

    python -m bench.maskgit_sampling          # tiny and S at 16x16 tokens; rewrites its doc table
    python -m bench.maskgit_sampling --quick  # tiny at 8x8, prints only

Both decoders run the same randomly initialised class-conditional MaskGIT (speed does not depend
on the weights) with the same sampling options (temperature 1, no top-k/top-p, no guidance) on the
same batch: `maskgit.generate` (MaskGIT's parallel decoding, T forward passes, here T = 8) and
`sampling.autoregressive_decode` (one forward pass per token, raster order: the cost of decoding
the same bidirectional model autoregressively, N = h*w passes). Each is one `jax.jit` compiled
ahead of time; the table gives the median of the timed calls after one warm-up call. Images/s
counts token grids; turning them into pixels (the tokenizer's decoder) costs the same for both
and is not included.
"""

from __future__ import annotations

import dataclasses
import math

from bench import common

NUM_CLASSES = 1000
VOCAB_SIZE = 1024  # MaskGIT's ImageNet tokenizer


@dataclasses.dataclass
class Case:
    size: str  # vqjax.models.maskgit preset: tiny, S, B, L
    grid: int  # h = w, in tokens
    batch_size: int
    num_steps: int = 8

    @property
    def label(self) -> str:
        return f"MaskGIT {self.size}, {self.grid}x{self.grid} tokens, batch {self.batch_size}"


@dataclasses.dataclass
class Row:
    case: Case
    num_params: int
    parallel_s: float  # seconds per batch
    token_by_token_s: float
    parallel_repeats: int
    token_by_token_repeats: int

    @property
    def parallel_images_per_s(self) -> float:
        return self.case.batch_size / self.parallel_s

    @property
    def token_by_token_images_per_s(self) -> float:
        return self.case.batch_size / self.token_by_token_s

    @property
    def speedup(self) -> float:
        return self.token_by_token_s / self.parallel_s

    @property
    def forward_passes(self) -> tuple[int, int]:
        return self.case.num_steps, self.case.grid**2


def cases(quick: bool, platform: str) -> list[Case]:
    """CPU: token-by-token S at 16x16 is 256 forward passes of a 12-layer model, so a batch of 2.
    Accelerators: batches that keep the device busy."""
    if quick:
        return [Case("tiny", 8, 2)]
    if platform == "cpu":
        return [Case("tiny", 8, 8), Case("tiny", 16, 8), Case("S", 16, 2)]
    return [Case("tiny", 16, 64), Case("S", 16, 32), Case("B", 16, 32)]


def build(case: Case):
    """(model, variables, labels) for a case: random init, class-conditional."""
    import jax
    import jax.numpy as jnp

    from vqjax.models import maskgit

    model = maskgit.create(case.size, vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES)
    tokens = jnp.zeros((1, case.grid, case.grid), jnp.int32)
    variables = jax.jit(model.init)(jax.random.key(0), tokens, jnp.zeros((1,), jnp.int32))
    labels = jax.random.randint(jax.random.key(1), (case.batch_size,), 0, NUM_CLASSES)
    return model, variables, labels


def decoders(model, case: Case):
    """(parallel, token_by_token): `fn(variables, rng, labels) -> tokens [B, h, w]`, same options."""
    import jax.numpy as jnp

    from vqjax.models import maskgit
    from vqjax.sampling import autoregressive_decode

    grid = (case.grid, case.grid)
    options = dict(temperature=1.0, top_k=None, top_p=None, guidance_scale=None)

    def parallel(variables, rng, labels):
        return maskgit.generate(model, variables, rng, labels, grid=grid,
                                num_steps=case.num_steps, **options).tokens

    def token_by_token(variables, rng, labels):
        batch = labels.shape[0]
        tokens = jnp.full((batch, case.grid**2), model.mask_token_id, jnp.int32)
        out = autoregressive_decode(maskgit.sequence_logits_fn(model, variables, grid), tokens,
                                    rng, mask_token_id=model.mask_token_id, labels=labels,
                                    prediction=model.prediction, **options)
        return out.tokens.reshape(batch, *grid)

    return parallel, token_by_token


def time_compiled(fn, args, repeats: int, warmup: int = 1) -> float:
    """Median seconds of `fn(*args)` compiled ahead of time, after `warmup` untimed calls."""
    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    return common.timeit(compiled, *args, repeats=repeats, warmup=warmup)


def bench_case(case: Case, repeats: int, token_by_token_repeats: int,
               slow_call_s: float = 20.0) -> Row:
    """Parallel: `repeats` timed calls after a warm-up call. Token-by-token: when its expected
    call time (parallel time x N / T) exceeds `slow_call_s`, one timed call and no warm-up (the
    program is compiled ahead of time, so its first call is already steady state)."""
    import jax

    model, variables, labels = build(case)
    rng = jax.random.key(2)
    parallel, token_by_token = decoders(model, case)
    args = (variables, rng, labels)
    tokens = jax.jit(parallel)(*args)
    if not bool((tokens >= 0).all() & (tokens < model.vocab_size).all()):
        raise RuntimeError(f"{case.label}: parallel decoding left mask tokens or bad ids")
    parallel_s = time_compiled(parallel, args, repeats)
    expected = parallel_s * case.grid**2 / case.num_steps
    slow = expected > slow_call_s
    tbt_repeats = 1 if slow else token_by_token_repeats
    return Row(
        case=case, num_params=sum(x.size for x in jax.tree.leaves(variables)),
        parallel_s=parallel_s,
        token_by_token_s=time_compiled(token_by_token, args, tbt_repeats, warmup=0 if slow else 1),
        parallel_repeats=repeats, token_by_token_repeats=tbt_repeats)


def format_table(rows: list[Row]) -> str:
    header = (
        "| model | params | forward passes (parallel / token-by-token) | parallel images/s "
        "| token-by-token images/s | parallel s/batch | token-by-token s/batch | speed-up "
        "| timed calls (parallel / token-by-token) |")
    lines = []
    for r in rows:
        parallel_passes, sequential_passes = r.forward_passes
        lines.append(
            f"| {r.case.label} | {r.num_params / 1e6:.1f}M | {parallel_passes} / "
            f"{sequential_passes} | {common.significant(r.parallel_images_per_s)} "
            f"| {common.significant(r.token_by_token_images_per_s)} "
            f"| {common.significant(r.parallel_s)} | {common.significant(r.token_by_token_s)} "
            f"| {common.significant(r.speedup, 2)}x "
            f"| {r.parallel_repeats} / {r.token_by_token_repeats} |")
    return common.markdown_table(header, lines)


def check_row(row: Row) -> None:
    for value in (row.parallel_s, row.token_by_token_s, row.parallel_images_per_s,
                  row.token_by_token_images_per_s, row.speedup):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{row.case.label}: non-positive or non-finite figure {value}")


def run(quick: bool = False, repeats: int | None = None, write: bool = True,
        command: str = "python -m bench.maskgit_sampling", doc=common.DOC) -> list[Row]:
    import jax

    repeats = repeats or (2 if quick else 5)
    token_by_token_repeats = 1 if quick else max(1, min(repeats, 2))
    rows = common.measure_all(
        cases(quick, jax.devices()[0].platform),
        lambda case: bench_case(case, repeats, token_by_token_repeats),
        lambda case, row: (f"{case.label}: parallel {row.parallel_images_per_s:,.2f} images/s, "
                           f"token-by-token {row.token_by_token_images_per_s:,.3f} images/s, "
                           f"{row.speedup:.1f}x"),
        tag="maskgit_sampling")
    notes = (f"Class-conditional MaskGIT, random init, vocabulary {VOCAB_SIZE}, "
             f"{NUM_CLASSES} classes, float32, one device; temperature 1, no guidance. "
             f"Median of the timed calls after one warm-up call (a token-by-token call "
             f"expected to take over 20 s is timed once, without warm-up: it is compiled "
             f"ahead of time); token grids only (no pixel decoding).")
    common.publish("maskgit_sampling", "MaskGIT sampling", command, format_table(rows), write,
                   notes, doc=doc)
    return rows


def main(argv=None, command: str | None = None) -> list[Row]:
    return common.run_main(run, "bench.maskgit_sampling", __doc__.splitlines()[0], argv, command,
                           "tiny at 8x8; do not write the doc", "timed parallel calls per case")


if __name__ == "__main__":
    common.ensure_fake_devices()
    main()
