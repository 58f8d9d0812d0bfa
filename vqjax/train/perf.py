"""Model FLOPs utilization: FLOPs from XLA's cost analysis over the device's peak FLOP/s."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

# Dense bf16 peak FLOP/s per device, from the vendors' spec sheets.
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA B200": 2250e12,
}


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled computation (per device, as XLA partitions it), summed
    over devices; 0 when the backend gives no cost analysis."""
    return compiled_flops_per_device(compiled) * jax.device_count()


@functools.lru_cache(maxsize=None)
def peak_flops_per_device() -> float:
    """The device's peak FLOP/s: the spec-sheet table for accelerators; on CPU, a measured float32
    matmul rate of the whole host, divided among its (possibly fake) devices."""
    device = jax.devices()[0]
    for name, peak in PEAK_FLOPS.items():
        if device.device_kind.startswith(name):
            return peak
    if device.platform != "cpu":
        return 0.0
    return measured_matmul_flops() / jax.local_device_count()


def measured_matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    """float32 [n, n] x [n, n] matmuls per second on the first device, as FLOP/s."""
    x = jax.device_put(jnp.ones((n, n), jnp.float32), jax.devices()[0])
    matmul = jax.jit(lambda a: a @ a)
    matmul(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul(x).block_until_ready()
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def compiled_flops_per_device(compiled) -> float:
    """FLOPs one device runs in one call of a compiled (SPMD-partitioned) computation; 0 when the
    backend gives no cost analysis. Multiply by the mesh size for the whole program."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return 0.0
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return max(float((analysis or {}).get("flops", 0.0)), 0.0)


def measured_matmul_peak(device=None, dtype=jnp.float32, n: int | None = None,
                         repeats: int = 5) -> float:
    """Achieved FLOP/s of the best of `repeats` timed [n, n] x [n, n] matmuls on `device` (default:
    the first), after one compiling call: the denominator of a measured MFU, on any machine.

    n defaults to 2048 on CPU and 8192 on accelerators (large enough to reach the matmul units'
    rate); `dtype` should be the model's compute dtype (float32 on CPU, bfloat16 on GPU/TPU).
    """
    call, flops = matmul_benchmark(device, dtype, n)
    call().block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call().block_until_ready()
        best = min(best, time.perf_counter() - start)
    return flops / best


def matmul_benchmark(device=None, dtype=jnp.float32, n: int | None = None):
    """(call, FLOPs): a compiled no-argument [n, n] x [n, n] matmul on `device` (default: the
    first); n defaults to 2048 on CPU and 8192 on accelerators. `measured_matmul_peak` times it;
    benchmarks that time it in turn with their own work (same load) call it themselves."""
    device = device or jax.devices()[0]
    n = n or (2048 if device.platform == "cpu" else 8192)
    x = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), dtype), device)
    matmul = jax.jit(lambda a: a @ a).lower(x).compile()
    return (lambda: matmul(x)), 2 * n**3
