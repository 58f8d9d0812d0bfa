"""What every benchmark shares: timing, the machine line, and rewriting its own doc section.

Each bench module owns one section of docs/benchmarks.md between `<!-- bench.NAME:begin -->` and
`<!-- bench.NAME:end -->`; `write_section` replaces only that span (hand-written notes outside the
markers survive), or appends a new `## heading` with the section when the markers are missing.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
FAKE_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def ensure_fake_devices(count: int = 8) -> None:
    """On a CPU host, ask XLA for `count` fake CPU devices (the scaling bench needs several).
    Only effective before jax is imported; a flag already set is left alone."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FAKE_DEVICES_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {FAKE_DEVICES_FLAG}={count}".strip()


def time_calls(calls, repeats: int, warmup: int = 1,
               slow_s: float | None = None) -> list[list[float]]:
    """Wall seconds of each timed call of each of `calls` (no-argument callables; their results
    blocked on), the calls taking turns round by round after `warmup` untimed rounds (so that
    they share the machine's load alike); `repeats` timed rounds, or one when a warm-up call took
    over `slow_s` seconds. One list of seconds per call."""
    import jax

    for _ in range(warmup):
        for call in calls:
            start = time.perf_counter()
            jax.block_until_ready(call())
            if slow_s is not None and time.perf_counter() - start > slow_s:
                repeats = 1
    times = [[] for _ in calls]
    for _ in range(max(repeats, 1)):
        for call, seconds in zip(calls, times):
            start = time.perf_counter()
            jax.block_until_ready(call())
            seconds.append(time.perf_counter() - start)
    return times


def median_seconds(call, repeats: int, warmup: int = 1,
                   slow_s: float | None = None) -> tuple[float, int]:
    """(median wall seconds of `call()`, timed calls): `time_calls` of one call."""
    [seconds] = time_calls([call], repeats, warmup, slow_s)
    return statistics.median(seconds), len(seconds)


def timeit(fn, *args, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn(*args)` (outputs blocked on) after `warmup` untimed calls."""
    return median_seconds(lambda: fn(*args), repeats, warmup)[0]


def measure_all(items, measure, describe, tag: str = "", count: bool = True) -> list:
    """The run loop: `measure(item)` for each of `items`, printing `[tag i/n] describe(item, row)
    (Ns)` as each ends (`count=False`: no i/n). The rows, in order."""
    items = list(items)
    rows = []
    for i, item in enumerate(items, 1):
        start = time.perf_counter()
        row = measure(item)
        rows.append(row)
        prefix = " ".join(filter(None, [tag, f"{i}/{len(items)}" if count else ""]))
        print(f"[{prefix}] {describe(item, row)} ({time.perf_counter() - start:.0f}s)",
              flush=True)
    return rows


def write_table(name: str, heading: str, command: str, table: str, notes: str = "",
                extra_versions: str = "", doc: Path = DOC) -> None:
    """Write the `bench.NAME` section: header, `notes` (what was measured, how), then `table`."""
    body = "\n\n".join(filter(None, [header(command, extra_versions), notes, table]))
    write_section(name, heading, body, doc)


def publish(name: str, heading: str, command: str, table: str, write: bool, notes: str = "",
            extra_versions: str = "", doc: Path = DOC) -> None:
    """Print `table` and, when `write`, write it to its doc section (`write_table`)."""
    print(table, flush=True)
    if write:
        write_table(name, heading, command, table, notes, extra_versions, doc)
        print(f"wrote {doc}")


def significant(x: float, digits: int = 3) -> str:
    """`x` to `digits` significant figures, thousands separated, never in e-notation:
    12345.6 -> "12,346", 25.23 -> "25.2", 0.04432 -> "0.0443"."""
    import math

    if x == 0 or not math.isfinite(x):
        return str(x)
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    return f"{x:,.{decimals}f}"


def memory_analysis_bytes(compiled) -> int:
    """XLA's static estimate of a compiled program's memory per device: arguments + outputs +
    temporaries, less the outputs that alias donated arguments; 0 when the backend gives none."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # not implemented on every backend
        return 0
    if stats is None:
        return 0
    alias = getattr(stats, "alias_size_in_bytes", 0) or 0
    return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
               + stats.temp_size_in_bytes - alias)


def device_peak_bytes(device) -> int | None:
    """The allocator's peak bytes in use on `device` (GPU/TPU), None where it keeps no stats."""
    try:
        stats = device.memory_stats()
    except Exception:
        return None
    return (stats or {}).get("peak_bytes_in_use")


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import jax

    out = [f"jax {jax.__version__}"]
    for name in ("jaxlib", "flax", "optax", "numpy"):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def machine() -> str:
    """CPU, cores, JAX devices and the load average when measured (others share this machine)."""
    import jax

    device = jax.devices()[0]
    kind = device.device_kind
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{jax.device_count()} x JAX {device.platform}:{kind}; load average {load} (1/5/15 min)")


def header(command: str, extra_versions: str = "") -> str:
    """The lines that open a doc section: command, machine, versions, date."""
    found = versions() + (f", {extra_versions}" if extra_versions else "")
    return (f"Command: `{command}`  \nMachine: {machine()}  \nVersions: {found}  \n"
            f"Date: {time.strftime('%Y-%m-%d')}")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench.{name}:begin -->", f"<!-- bench.{name}:end -->"


def write_section(name: str, heading: str, body: str, doc: Path = DOC) -> None:
    """Replace the `bench.NAME` section of `doc` with `body` (or append it under `## heading`)."""
    begin, end = markers(name)
    section = f"{begin}\n{body.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: section, text,
                      count=1, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n{section}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def markdown_table(header: str, lines) -> str:
    """A markdown table: the `header` row, its `|---|` separator, then `lines`."""
    separator = "|" + "---|" * (header.count("|") - 1)
    return "\n".join([header, separator, *lines])


def run_main(run, module: str, description: str, argv, command: str | None, quick_help: str,
             repeats_help: str, options=()):
    """The command line of a bench module whose `run(quick, repeats, ..., write=, command=)` does
    the work: --quick (small cases, no doc written), --repeats, the `options` ((flag, dict of
    add_argument keywords) pairs, passed to `run` by name) and --no-write."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--repeats", type=int, default=None, help=repeats_help)
    for flag, keywords in options:
        parser.add_argument(flag, **keywords)
    parser.add_argument("--no-write", action="store_true")
    args = vars(parser.parse_args(argv))
    quick, repeats, no_write = args.pop("quick"), args.pop("repeats"), args.pop("no_write")
    return run(quick, repeats, **args, write=not (quick or no_write),
               command=command or command_line(module, argv))


def command_line(module: str, argv) -> str:
    """`python -m bench.NAME args...` as it was run (for the doc)."""
    import shlex
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *map(shlex.quote, args)])
