"""Everything that matters on one GPU or TPU, in one run of under 8 minutes.

    bash bench/accelerator.sh                 # on the accelerator: rewrites its section of docs/benchmarks.md
    python -m bench.accelerator --dry-run     # tiny sizes on any machine (the tests run this)

1. ViT-VQGAN B train step at 256 px in bf16 (`bench.train_step`'s step: generator + StyleGAN
   discriminator, Adam, EMA): images/s, MFU against the measured bf16 matmul peak, XLA's memory
   estimate and the allocator's peak.
2. MaskGIT B train step (`bench.maskgit_peer`'s step: 16x16 tokens + class token, 1024 codes,
   masked cross-entropy, AdamW) in bf16: images/s, MFU.
3. MaskGIT B 8-step parallel decoding (`bench.maskgit_sampling`'s decoder): token grids/s.
4. Attention, cuDNN flash against XLA (`vqjax.models.layers.dot_product_attention`): forward +
   backward time at 4,096 tokens (a 512 px image in 8 px patches), and the memory of a 512 px
   ViT-VQGAN step compiled with each (`layers.force_attention`).
`--dry-run` shrinks every case to tiny sizes in float32 and skips cuDNN off NVIDIA GPUs.
"""

from __future__ import annotations

import argparse
import time

from bench import common


def matmul_peak(dtype_name: str) -> float:
    import jax
    import jax.numpy as jnp

    from vqjax.train import perf

    return perf.measured_matmul_peak(jax.devices()[0], getattr(jnp, dtype_name))


def tokenizer_step(dry: bool) -> str:
    from bench import train_step

    case = (train_step.Case("tiny", 32, 8, "float32") if dry  # = train_step's quick case
            else train_step.Case("B", 256, 16, "bfloat16"))
    row = train_step.bench_case(case, repeats=2 if dry else 5)
    train_step.check_row(row)
    peak = f", device peak {row.device_peak_bytes / 2**30:.2f} GiB" if row.device_peak_bytes else ""
    return (f"| ViT-VQGAN {case.label}, {case.compute_dtype} | "
            f"{common.significant(row.images_per_s)} images/s | MFU "
            f"{common.significant(100 * row.mfu, 2)}% | XLA estimate "
            f"{row.memory_bytes / 2**30:.2f} GiB{peak} |")


def maskgit_step(dry: bool) -> str:
    import jax

    from bench import maskgit_peer
    from vqjax.train import perf

    size, batch, dtype = (((2, 64, 2, 256), 4, "float32") if dry
                          else ((24, 768, 16, 3072), 64, "bfloat16"))
    run, num_params, compiled = maskgit_peer.vqjax_step(size, batch, 16, 1024, 1000, dtype,
                                                        return_compiled=True)
    seconds = common.timeit(lambda: run(), repeats=3 if dry else 10)
    flops = perf.compiled_flops_per_device(compiled)
    mfu = flops / seconds / matmul_peak(dtype) if flops else 0.0
    peak = common.device_peak_bytes(jax.devices()[0])
    peak = f", device peak {peak / 2**30:.2f} GiB" if peak else ""
    label = "tiny" if dry else "B"
    return (f"| MaskGIT {label} train step, batch {batch}, {dtype} ({common.significant(num_params / 1e6)}M params) | "
            f"{common.significant(batch / seconds)} images/s | MFU "
            f"{common.significant(100 * mfu, 2)}% | {peak.lstrip(', ') or '-'} |")


def sampling(dry: bool) -> str:
    import jax

    from bench import maskgit_sampling as ms

    case = ms.Case("tiny", 8, 2) if dry else ms.Case("B", 16, 32)
    model, variables, labels = ms.build(case)
    parallel, _ = ms.decoders(model, case)
    seconds = ms.time_compiled(parallel, (variables, jax.random.key(2), labels),
                               repeats=2 if dry else 5)
    return (f"| {case.label}, {case.num_steps}-step parallel decoding | "
            f"{common.significant(case.batch_size / seconds)} token grids/s | - | - |")


def attention(dry: bool) -> list[str]:
    import jax
    import jax.numpy as jnp

    from bench import train_step
    from vqjax.models import layers

    on_nvidia = jax.devices()[0].platform == "gpu"
    backends = ["xla", "cudnn"] if on_nvidia else ["xla"]
    tokens, heads, head_dim, batch = (64, 2, 16, 2) if dry else (4096, 12, 64, 8)
    dtype = jnp.float32 if dry else jnp.bfloat16
    q, k, v = (jax.random.normal(key, (batch, tokens, heads, head_dim), dtype)
               for key in jax.random.split(jax.random.key(0), 3))
    rows = []
    for backend in backends:
        loss = lambda q, k, v, backend=backend: layers.dot_product_attention(  # noqa: E731
            q, k, v, implementation=backend).astype(jnp.float32).sum()
        fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        seconds = common.timeit(fn, q, k, v, repeats=3 if dry else 20)
        # The memory of a whole 512 px ViT-VQGAN step traced with this attention.
        case = (train_step.Case("tiny", 32, 8, "float32") if dry
                else train_step.Case("B", 512, 4, "bfloat16"))
        if not dry:  # the compile cache does not key on the attention: compile afresh
            train_step._COMPILED.clear()
        with layers.force_attention(backend):
            compiled = train_step.compile_step(case, [jax.devices()[0]])[1]
        memory = common.memory_analysis_bytes(compiled)
        rows.append(f"| attention {backend}, {tokens} tokens x {heads} heads x {head_dim}, batch "
                    f"{batch}, forward + backward | {common.significant(seconds * 1e3)} ms | - | "
                    f"ViT-VQGAN {case.label} step: {memory / 2**30:.2f} GiB (XLA estimate) |")
    if not on_nvidia:
        rows.append("| attention cudnn | not available on this platform | - | - |")
    return rows


def main(argv=None, command: str | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, float32; prints only")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for name, fn in (("tokenizer step", tokenizer_step), ("maskgit step", maskgit_step),
                     ("sampling", sampling), ("attention", attention)):
        t0 = time.perf_counter()
        out = fn(args.dry_run)
        rows += out if isinstance(out, list) else [out]
        print(f"[accelerator] {name}: {time.perf_counter() - t0:.0f}s", flush=True)
    table = common.markdown_table("| case | throughput | MFU | memory |", rows)
    print(table)
    print(f"[accelerator] total {time.perf_counter() - start:.0f}s")
    if not (args.dry_run or args.no_write):
        command = command or common.command_line("bench.accelerator", argv)
        common.write_table("accelerator", "One accelerator (bench/accelerator.sh)", command, table)


if __name__ == "__main__":
    main()
