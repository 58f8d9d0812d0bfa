"""Scaling benchmark: the tiny tokenizer train step at a fixed per-device batch on 1..8 devices.

    python -m bench.scaling                   # 1, 2, 4, 8 devices; rewrites its doc table
    python -m bench.scaling --quick           # 1 and 2 devices, prints only

Weak scaling: the global batch is (per-device batch) x (devices) on a ("data", "fsdp") mesh of the
first N devices (`vqjax.train.mesh.make_mesh`, data parallel), so perfect scaling multiplies
images/s by N. Efficiency = images/s on N devices / (N x images/s on 1 device). The step is the
trainer's own, compiled and timed as in `bench.train_step`.

On a CPU host the devices are fake (`--xla_force_host_platform_device_count=8`): every one of them
runs on the same few cores, so the figures measure the overhead of sharding (per-device programs,
gradient all-reduce) at constant compute per core, not a speed-up. On a GPU/TPU host with several
devices they measure real scaling.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from bench import common, train_step

SIZE, RESOLUTION = "tiny", 32


@dataclasses.dataclass
class Row:
    num_devices: int
    per_device_batch: int
    step_s: float
    flops_per_step: float

    @property
    def global_batch(self) -> int:
        return self.num_devices * self.per_device_batch

    @property
    def images_per_s(self) -> float:
        return self.global_batch / self.step_s


def device_counts(quick: bool, available: int) -> list[int]:
    counts = (1, 2) if quick else (1, 2, 4, 8)
    return [n for n in counts if n <= available]


def bench_devices(num_devices: int, per_device_batch: int, repeats: int) -> Row:
    import jax

    from vqjax.train import perf

    case = train_step.Case(SIZE, RESOLUTION, per_device_batch * num_devices, "float32")
    _, compiled, state, batch = train_step.compile_step(case, jax.devices()[:num_devices])
    [times], state, _ = train_step.time_steps(compiled, state, batch, repeats)
    step_s = statistics.median(times)
    jax.block_until_ready(state)
    return Row(num_devices, per_device_batch, step_s,
               perf.compiled_flops_per_device(compiled) * num_devices)


def efficiency(row: Row, base: Row) -> float:
    return row.images_per_s / (row.num_devices * base.images_per_s)


def format_table(rows: list[Row]) -> str:
    base = rows[0]
    header = (
        "| devices | global batch | images/s | step (s) | GFLOP/step | speed-up vs 1 device "
        "| scaling efficiency |")
    lines = []
    for r in rows:
        lines.append(
            f"| {r.num_devices} | {r.global_batch} | {common.significant(r.images_per_s)} "
            f"| {common.significant(r.step_s)} | {common.significant(r.flops_per_step / 1e9)} | {r.images_per_s / base.images_per_s:.2f}x "
            f"| {100 * efficiency(r, base):.0f}% |")
    return common.markdown_table(header, lines)


def check_row(row: Row) -> None:
    for value in (row.step_s, row.images_per_s, row.flops_per_step):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{row.num_devices} devices: non-positive or non-finite {value}")


def run(quick: bool = False, repeats: int | None = None, per_device_batch: int = 8,
        write: bool = True, command: str = "python -m bench.scaling", doc=common.DOC) -> list[Row]:
    import jax

    repeats = repeats or (2 if quick else 3)
    device = jax.devices()[0]
    rows = common.measure_all(
        device_counts(quick, jax.device_count()),
        lambda n: bench_devices(n, per_device_batch, repeats),
        lambda n, row: f"{n} devices: {row.images_per_s:,.1f} images/s", tag="scaling",
        count=False)
    fake = device.platform == "cpu"
    what = ("fake CPU devices sharing the host's cores: this measures sharding overhead, "
            "not speed-up" if fake else f"{device.device_kind} devices")
    notes = (f"ViT-VQGAN {SIZE} train step ({RESOLUTION}px, float32, perceptual loss off) at "
             f"{per_device_batch} images per device, data parallel over the first N devices "
             f"({what}); median of {repeats} steps after 1 warm-up step.")
    common.publish("scaling", "Scaling over devices", command, format_table(rows), write, notes,
                   doc=doc)
    return rows


def main(argv=None, command: str | None = None) -> list[Row]:
    return common.run_main(run, "bench.scaling", __doc__.splitlines()[0], argv, command,
                           "1 and 2 devices; do not write", "timed steps per mesh",
                           options=[("--per-device-batch", dict(type=int, default=8))])


if __name__ == "__main__":
    common.ensure_fake_devices()
    main()
