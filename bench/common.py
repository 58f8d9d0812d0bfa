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


def timeit(fn, *args, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn(*args)` (outputs blocked on) after `warmup` untimed calls."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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


def command_line(module: str, argv) -> str:
    """`python -m bench.NAME args...` as it was run (for the doc)."""
    import shlex
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *map(shlex.quote, args)])
