"""Quantizer benchmark: forward and forward+backward speed of every quantizer at realistic sizes.

    python -m bench.quantizers                 # full sizes; rewrites the table in docs/benchmarks.md
    python -m bench.quantizers --quick         # small sizes, prints only (the README's smoke run)

For each quantizer and codebook size it reports tokens/s for the forward pass (train=False) and for
forward+backward (train=True: state updates included, gradient w.r.t. z and params), the compiled
program's memory (XLA memory analysis: arguments + outputs + temporaries), and, for `vq`, the ratio
of its forward time to the bare [N, D] x [D, K] matmul that any nearest-code search must do. When
the optional `bench/requirements.txt` (torch, vector-quantize-pytorch) is installed, the equivalent
PyTorch classes run side by side on the same shapes and threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import jax.numpy as jnp

from vqjax import quantizers

from bench import common

DOC = common.DOC


@dataclasses.dataclass
class Case:
    label: str
    name: str
    options: dict
    tokens: int
    dim: int
    codebook_size: int
    torch_factory: str | None = None  # how to build the vector-quantize-pytorch peer


@dataclasses.dataclass
class Row:
    case: Case
    forward_s: float
    train_s: float
    memory_mb: float
    matmul_s: float | None = None
    torch_forward_s: float | None = None
    torch_train_s: float | None = None
    torch_note: str = ""


def cases(quick: bool) -> list[Case]:
    tokens, dim = (8 * 256, 64) if quick else (32 * 1024, 256)
    sizes = (1024, 16384) if quick else (1024, 16384, 262144)
    out = []
    for k in sizes:
        # 262k codes at 32k tokens is ~2.2 TFLOP per forward: on a 2-core CPU use 4k tokens.
        n = tokens if k <= 16384 else 4 * 1024
        out.append(Case(f"vq K={k}", "vq", {"codebook_size": k, "dim": dim}, n, dim, k, "vq"))
    k = 1024
    out += [
        Case(f"vq rotation K={k}", "vq", {"codebook_size": k, "dim": dim, "rotation_trick": True},
             tokens, dim, k, "vq_rotation"),
        Case(f"vq factorized 32-d cosine K={16384}", "vq",
             {"codebook_size": 16384, "dim": dim, "codebook_dim": 32, "use_cosine_sim": True},
             tokens, dim, 16384, "vq_factorized"),
        Case("rvq 4x1024", "rvq", {"num_quantizers": 4, "codebook_size": 1024, "dim": dim},
             tokens, dim, 1024, "rvq"),
        Case("simvq K=1024", "simvq", {"codebook_size": 1024, "dim": dim}, tokens, dim, 1024,
             "simvq"),
        Case("fsq 2^16 (8,8,8,5,5,5)", "fsq", {"levels": (8, 8, 8, 5, 5, 5)}, tokens, 6, 64000,
             "fsq"),
        Case("lfq 2^16", "lfq", {"dim": 16}, tokens, 16, 2**16, "lfq"),
        Case("bsq 2^16", "bsq", {"dim": 16}, tokens, 16, 2**16, None),
    ]
    return [c for c in out if c.name in quantizers.available()]


def bench_jax(case: Case, repeats: int) -> Row:
    q = quantizers.build(case.name, **case.options)
    z = jax.random.normal(jax.random.key(0), (case.tokens, case.dim), jnp.float32)
    variables = q.init(jax.random.key(1), z)
    weights = jax.random.normal(jax.random.key(2), z.shape)
    rng = jax.random.key(3)

    forward = jax.jit(lambda v, z: q.apply(v, z))

    def loss(params, state, z):
        z_q, out = q.apply({"params": params, "state": state}, z, rng=rng, train=True)
        return jnp.sum(z_q * weights) + out.loss, out.state

    train = jax.jit(jax.grad(loss, argnums=(0, 2), has_aux=True))
    forward_s = common.timeit(forward, variables, z, repeats=repeats)
    train_s = common.timeit(train, variables["params"], variables["state"], z, repeats=repeats)
    stats = train.lower(variables["params"], variables["state"], z).compile().memory_analysis()
    memory = 0.0
    if stats is not None:
        memory = (stats.argument_size_in_bytes + stats.output_size_in_bytes
                  + stats.temp_size_in_bytes) / 2**20
    row = Row(case, forward_s, train_s, memory)
    if case.name == "vq" and not case.options.get("codebook_dim"):
        codebook = jax.random.normal(jax.random.key(4), (case.codebook_size, case.dim))
        matmul = jax.jit(lambda z, c: z @ c.T)
        if case.codebook_size * case.tokens <= 2**31:
            row.matmul_s = common.timeit(matmul, z, codebook, repeats=repeats)
    return row


def bench_torch(case: Case, row: Row, repeats: int) -> None:
    """Fill in the vector-quantize-pytorch numbers for the same shapes, if it is installed."""
    try:
        import torch
        import vector_quantize_pytorch as vqp
    except ImportError:
        row.torch_note = "not installed"
        return
    if case.torch_factory is None:
        row.torch_note = "no counterpart"
        return
    # Its [N, K] float32 distance matrix and the copies autograd keeps: at 4 GiB (4,096 tokens x
    # 262,144 codes) the process grew past 23 GiB and was killed on a 24 GiB machine.
    if case.tokens * case.codebook_size * 4 >= 4 * 2**30 and case.torch_factory.startswith("vq"):
        row.torch_note = f"skipped: its full [N, K] distance matrix is {case.tokens * case.codebook_size * 4 / 2**30:.0f} GiB"
        return
    if case.torch_factory == "lfq" and case.tokens * case.codebook_size * 4 > 2 * 2**30:
        row.torch_note = (f"skipped: its entropy term builds an [N, 2^16] array "
                          f"({case.tokens * case.codebook_size * 4 / 2**30:.0f} GiB)")
        return
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    d, k = case.dim, case.codebook_size
    factory = {
        "vq": lambda: vqp.VectorQuantize(dim=d, codebook_size=k, decay=0.99, commitment_weight=0.25),
        "vq_rotation": lambda: vqp.VectorQuantize(dim=d, codebook_size=k, decay=0.99,
                                                  commitment_weight=0.25, rotation_trick=True),
        "vq_factorized": lambda: vqp.VectorQuantize(dim=d, codebook_size=k, codebook_dim=32,
                                                    use_cosine_sim=True, decay=0.99,
                                                    commitment_weight=0.25),
        "rvq": lambda: vqp.ResidualVQ(dim=d, num_quantizers=4, codebook_size=k, decay=0.99,
                                      commitment_weight=0.25),
        "simvq": lambda: vqp.SimVQ(dim=d, codebook_size=k),
        "fsq": lambda: vqp.FSQ(levels=[8, 8, 8, 5, 5, 5]),
        "lfq": lambda: vqp.LFQ(dim=16, entropy_loss_weight=0.1, commitment_loss_weight=0.25),
    }[case.torch_factory]
    module = factory()
    x = torch.randn(1, case.tokens, d)
    weights = torch.randn_like(x)

    def run_forward():
        module.eval()
        with torch.no_grad():
            module(x)

    def run_train():
        module.train()
        xg = x.clone().requires_grad_(True)
        out = module(xg)
        quantized = out[0]
        aux = [t for t in out[2:] if torch.is_tensor(t) and t.numel() == 1] if len(out) > 2 else []
        total = (quantized * weights).sum() + sum(a.sum() for a in aux)
        total.backward()

    try:
        row.torch_forward_s = common.timeit(run_forward, repeats=repeats)
        row.torch_train_s = common.timeit(run_train, repeats=repeats)
    except Exception as err:  # report, don't hide: a peer API change should be visible
        row.torch_note = f"failed: {type(err).__name__}: {err}"[:120]


def format_table(rows: list[Row]) -> str:
    header = (
        "| quantizer | tokens x dim | fwd tokens/s | fwd+bwd tokens/s | memory (MiB) | fwd / matmul "
        "| torch fwd tokens/s | torch fwd+bwd tokens/s | fwd+bwd speed-up vs torch |")
    lines = []
    for r in rows:
        c = r.case
        ratio = f"{r.forward_s / r.matmul_s:.2f}x" if r.matmul_s else ""
        tf = f"{c.tokens / r.torch_forward_s:,.0f}" if r.torch_forward_s else r.torch_note
        tt = f"{c.tokens / r.torch_train_s:,.0f}" if r.torch_train_s else ""
        speedup = f"{r.torch_train_s / r.train_s:.1f}x" if r.torch_train_s else ""
        lines.append(
            f"| {c.label} | {c.tokens} x {c.dim} | {c.tokens / r.forward_s:,.0f} "
            f"| {c.tokens / r.train_s:,.0f} | {r.memory_mb:,.0f} | {ratio} | {tf} | {tt} | {speedup} |"
        )
    return common.markdown_table(header, lines)


def torch_versions() -> str:
    """The PyTorch peer's versions, when it is installed."""
    try:
        from importlib.metadata import version

        import torch
        import vector_quantize_pytorch  # noqa: F401
    except ImportError:
        return ""
    return (f"torch {torch.__version__}, "
            f"vector-quantize-pytorch {version('vector-quantize-pytorch')}")


def environment() -> str:
    return common.machine() + "; " + ", ".join(filter(None, [common.versions(), torch_versions()]))


def main(argv=None, command: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write the doc")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default="", help="comma-separated labels substrings to run")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    selected = [c for c in cases(args.quick)
                if not args.only or any(s in c.label for s in args.only.split(","))]
    print(f"# {environment()}", flush=True)

    def measure(case: Case) -> Row:
        row = bench_jax(case, repeats)
        if not args.no_torch:
            bench_torch(case, row, repeats)
        return row

    rows = common.measure_all(
        selected, measure,
        lambda case, row: (f"{case.label}: fwd {case.tokens / row.forward_s:,.0f} tok/s, "
                           f"fwd+bwd {case.tokens / row.train_s:,.0f} tok/s"))
    common.publish("quantizers", "Quantizers",
                   command or common.command_line("bench.quantizers", argv), format_table(rows),
                   write=not args.quick and not args.no_write, extra_versions=torch_versions())


if __name__ == "__main__":
    main()
