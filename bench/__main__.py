"""Every benchmark, each rewriting its own section of docs/benchmarks.md.

    python -m bench                              # all, full sizes (tens of minutes on 2 CPU cores)
    python -m bench --quick                      # all, small sizes, prints only
    python -m bench --only train_step,scaling    # some of them
    python -m bench --no-write --repeats 2       # measure and print, leave the doc alone

Benchmarks, in the doc's order: quantizers (with the PyTorch peer when installed), train_step
(tokenizer train step, tiny/S/B: images/s, MFU, memory), maskgit_sampling (parallel vs
token-by-token decoding), maskgit_peer (MaskGIT train step against the same network in PyTorch),
scaling (1..8 devices), data_pipeline (JPEG decoding + crops per CPU core, folder vs prepared). On a CPU host, 8 fake devices are set up before
jax is imported (the scaling benchmark needs them).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

from bench import common

BENCHMARKS = ("quantizers", "train_step", "maskgit_sampling", "maskgit_peer", "scaling",
              "data_pipeline")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; do not write the doc")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--only", default="", help=f"comma-separated names: {', '.join(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats, every benchmark")
    parser.add_argument("--no-torch", action="store_true", help="quantizers: skip the PyTorch peer")
    args = parser.parse_args(argv)
    selected = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    common.ensure_fake_devices()  # before anything imports jax
    import importlib

    command = " ".join(["python -m bench", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    shared = (["--quick"] if args.quick else []) + (["--no-write"] if args.no_write else [])
    shared += ["--repeats", str(args.repeats)] if args.repeats else []
    for name in BENCHMARKS:
        if name not in selected:
            continue
        start = time.perf_counter()
        print(f"\n## bench.{name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        extra = ["--no-torch"] if name in ("quantizers", "maskgit_peer") and args.no_torch else []
        module.main(shared + extra, command=command)
        print(f"## bench.{name}: {time.perf_counter() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
