"""Tokenizer train step benchmark: images/s, MFU and memory of the ViT-VQGAN step, tiny/S/B.

    python -m bench.train_step                # every size; rewrites its table in docs/benchmarks.md
    python -m bench.train_step --quick        # tiny only, prints only

The step is the trainer's own (`TokenizerTrainer.train_step`: generator forward/backward with the
quantizer, StyleGAN discriminator forward/backward, Adam for both, EMA, the non-finite guard),
compiled once with `jax.jit` (state donated) on a one-device mesh, fed a fixed random batch already
on the device (no input pipeline). Timed steps follow one warm-up step; the table gives the median.

Next to it, the generator alone on the same batch and state (`model.apply` with the quantizer,
L2 + quantizer loss, forward and backward; no discriminator, optimizers, EMA or guard), timed in
alternation with the full step so that both see the same load: the ratio of the two is what the
rest of the step costs.

FLOPs per step come from XLA's cost analysis of the compiled step (`perf.compiled_flops_per_device`);
MFU is achieved FLOP/s over a *measured* peak: the median rate of a large matmul in the step's
compute dtype on the same device, timed in turn with the steps (same load), not a spec-sheet
figure. Memory is XLA's
static estimate for the compiled step (arguments + outputs + temporaries, less donated aliases);
on GPU/TPU the allocator's peak bytes in use is reported too.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

from bench import common


@dataclasses.dataclass
class Case:
    size: str  # configs/vitvqgan.py variant: tiny, S, B
    resolution: int
    batch_size: int
    compute_dtype: str

    @property
    def label(self) -> str:
        return f"{self.size} {self.resolution}px batch {self.batch_size}"


@dataclasses.dataclass
class Row:
    case: Case
    step_s: float
    flops_per_step: float
    peak_flops: float  # measured matmul FLOP/s of the device, in the case's compute dtype
    memory_bytes: int
    device_peak_bytes: int | None
    num_params: int
    steps_timed: int
    compile_s: float | None  # lower + compile; None when compiled earlier in this process
    generator_s: float | None = None  # generator forward + backward alone, same batch
    generator_flops: float | None = None

    @property
    def images_per_s(self) -> float:
        return self.case.batch_size / self.step_s

    @property
    def mfu(self) -> float:
        return self.flops_per_step / self.step_s / self.peak_flops if self.peak_flops else 0.0


def cases(quick: bool, platform: str) -> list[Case]:
    """CPU: small resolutions and batches so that S and B finish in minutes on 2 cores.
    Accelerators: the configs' own resolution (256 px for S/B) and dtype, batches that fit."""
    if quick:
        return [Case("tiny", 32, 8, "float32")]
    if platform == "cpu":
        return [Case("tiny", 32, 16, "float32"), Case("tiny", 32, 64, "float32"),
                Case("S", 128, 4, "float32"), Case("B", 64, 2, "float32")]
    return [Case("tiny", 32, 256, "float32"), Case("S", 256, 32, "bfloat16"),
            Case("B", 256, 16, "bfloat16")]


def make_config(case: Case):
    """configs/vitvqgan.py:SIZE,res=PIXELS with the batch and dtype of the case; perceptual loss
    off (LPIPS/VGG16 is a separate network; `tiny` already has it off)."""
    from configs import vitvqgan

    config = vitvqgan.get_config(f"{case.size},res={case.resolution}")
    config.batch_size = case.batch_size
    config.compute_dtype = case.compute_dtype
    config.loss.perceptual_weight = 0.0
    config.grad_accum_steps = 1
    return config


# The last compiled step, (case, device ids) -> (trainer, compiled step, state shardings): one
# entry only, since a compiled B step holds gigabytes of host memory.
_COMPILED: dict = {}
LAST_COMPILE_S: dict = {}  # (case, device ids) -> seconds spent in lower + compile


def compile_step(case: Case, devices):
    """(trainer, compiled step, fresh state, batch) for `case` on a data-parallel mesh of
    `devices`, as the trainer's loop builds them. The compiled step is kept for the process, so
    benchmarks sharing a case and mesh one after the other (train_step's quick tiny case, then
    scaling's 1 device) compile it once."""
    import jax
    import jax.numpy as jnp

    from vqjax.train import mesh as mesh_lib
    from vqjax.train.tokenizer import TokenizerTrainer

    mesh = mesh_lib.make_mesh(devices=list(devices))
    batch_sharding = mesh_lib.batch_sharding(mesh)
    key = (dataclasses.astuple(case), tuple(d.id for d in devices))
    if key not in _COMPILED:
        _COMPILED.clear()
        config = make_config(case)
        trainer = TokenizerTrainer(config, mesh)
        abstract, shardings = trainer.state_shardings()
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                abstract, shardings)
        batch_spec = {"image": jax.ShapeDtypeStruct((config.batch_size, *trainer.image_shape),
                                                    jnp.float32, sharding=batch_sharding)}
        step = jax.jit(trainer.train_step, in_shardings=(shardings, batch_sharding),
                       out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=(0,))
        start = time.perf_counter()
        _COMPILED[key] = (trainer, step.lower(abstract, batch_spec).compile(), shardings)
        LAST_COMPILE_S[key] = time.perf_counter() - start
    trainer, compiled, shardings = _COMPILED[key]
    state = jax.jit(trainer.init_state, out_shardings=shardings)(
        jax.random.key(trainer.config.seed))
    images = jax.random.uniform(jax.random.key(1), (case.batch_size, *trainer.image_shape),
                                jnp.float32, -1.0, 1.0)
    batch = {"image": jax.device_put(images, batch_sharding)}
    return trainer, compiled, state, batch


def generator_only(trainer, state, batch):
    """The compiled generator-only gradient `(params, quantizer state, images) -> grads`: the
    tokenizer's forward with the quantizer (train mode), L2 + quantizer loss, backward."""
    import jax
    import jax.numpy as jnp

    from vqjax.quantizers.linen import QUANTIZER_STATE, RNG_STREAM

    def loss(params, quantizer_state, images):
        rng = jax.random.key(0)
        (outputs, aux), mutated = trainer.model.apply(
            {"params": params, QUANTIZER_STATE: quantizer_state}, images, train=True,
            rngs={RNG_STREAM: rng, "dropout": rng}, mutable=[QUANTIZER_STATE])
        return jnp.mean((outputs - images) ** 2) + aux.loss, mutated

    grad = jax.jit(jax.grad(loss, has_aux=True))
    return grad.lower(state.params, state.quantizer_state, batch["image"]).compile()


def time_steps(compiled, state, batch, repeats: int, warmup: int = 1,
               slow_step_s: float = 20.0, others=()) -> tuple[list, object, int]:
    """Seconds of each of `repeats` steps after `warmup` steps (only 1 timed step when a warm-up
    step took over `slow_step_s`), with each of `others` (functions of the current state) timed
    in turn after every step (`common.time_calls`: same load); the final state and the number of
    timed steps. The first list is the steps', one list per `others` follows."""
    latest = {"state": state}

    def step():
        latest["state"], metrics = compiled(latest["state"], batch)
        return latest["state"], metrics

    calls = [step] + [lambda other=other: other(latest["state"]) for other in others]
    times = common.time_calls(calls, repeats, warmup, slow_step_s)
    return times, latest["state"], len(times[0])


def bench_case(case: Case, repeats: int, generator: bool = True) -> Row:
    import jax
    import jax.numpy as jnp

    from vqjax.train import perf

    device = jax.devices()[0]
    key = (dataclasses.astuple(case), (device.id,))
    compiled_before = key in _COMPILED
    trainer, compiled, state, batch = compile_step(case, [device])
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    peak_call, peak_flops = perf.matmul_benchmark(device, getattr(jnp, case.compute_dtype))
    others = [lambda _: peak_call()]
    if generator:
        generator_grad = generator_only(trainer, state, batch)
        others.append(lambda s: generator_grad(s.params, s.quantizer_state, batch["image"]))
    times, state, steps_timed = time_steps(compiled, state, batch, repeats, others=others)
    jax.block_until_ready(state)
    return Row(
        case=case, step_s=statistics.median(times[0]),
        flops_per_step=perf.compiled_flops_per_device(compiled),  # one device
        peak_flops=peak_flops / statistics.median(times[1]),
        memory_bytes=common.memory_analysis_bytes(compiled),
        device_peak_bytes=common.device_peak_bytes(device),
        num_params=num_params, steps_timed=steps_timed,
        compile_s=None if compiled_before else LAST_COMPILE_S[key],
        generator_s=statistics.median(times[2]) if generator else None,
        generator_flops=perf.compiled_flops_per_device(generator_grad) if generator else None)


def ratio(a: float | None, b: float | None) -> str:
    """`a / b` as '2.1x' (`b` None: `a` itself, 3 significant digits; '' when `a` is None)."""
    if a is None:
        return ""
    return common.significant(a) if b is None else f"{a / b:.2g}x"


def format_table(rows: list[Row]) -> str:
    header = (
        "| model | params (generator) | dtype | images/s | step (s) | GFLOP/step | achieved TFLOP/s "
        "| measured matmul peak TFLOP/s | MFU | memory, XLA estimate (MiB) | device peak (MiB) "
        "| timed steps | compile (s) | generator only (s) | step / generator, time "
        "| step / generator, FLOPs |")
    lines = []
    for r in rows:
        c = r.case
        device_peak = f"{r.device_peak_bytes / 2**20:,.0f}" if r.device_peak_bytes else "n/a"
        compile_s = f"{r.compile_s:.0f}" if r.compile_s is not None else "earlier"
        lines.append(
            f"| ViT-VQGAN {c.label} | {r.num_params / 1e6:.1f}M | {c.compute_dtype} "
            f"| {common.significant(r.images_per_s)} | {common.significant(r.step_s)} "
            f"| {common.significant(r.flops_per_step / 1e9)} "
            f"| {common.significant(r.flops_per_step / r.step_s / 1e12)} "
            f"| {common.significant(r.peak_flops / 1e12)} | {common.significant(100 * r.mfu, 2)}% | {r.memory_bytes / 2**20:,.0f} | {device_peak} "
            f"| {r.steps_timed} | {compile_s} | {ratio(r.generator_s, None)} "
            f"| {ratio(r.step_s, r.generator_s)} | {ratio(r.flops_per_step, r.generator_flops)} |")
    return common.markdown_table(header, lines)


def check_row(row: Row) -> None:
    """Sanity of a measured row (the tests call this): positive, finite figures."""
    for value in (row.step_s, row.images_per_s, row.flops_per_step, row.peak_flops, row.mfu):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{row.case.label}: non-positive or non-finite figure {value}")


def run(quick: bool = False, repeats: int | None = None, write: bool = True,
        command: str = "python -m bench.train_step", doc=common.DOC) -> list[Row]:
    import jax

    repeats = repeats or (2 if quick else 3)
    rows = common.measure_all(
        cases(quick, jax.devices()[0].platform), lambda case: bench_case(case, repeats),
        lambda case, row: (f"{case.label}: {common.significant(row.images_per_s)} images/s, "
                           f"MFU {common.significant(100 * row.mfu, 2)}%"),
        tag="train_step")
    notes = (f"ViT-VQGAN train step (generator + StyleGAN discriminator, Adam, EMA), perceptual "
             f"loss off, one device, synthetic batch already on the device; median of "
             f"{repeats} timed steps after 1 warm-up step (1 timed step when the warm-up step "
             f"took over 20 s). Compile: lower + XLA compile of the step.")
    common.publish("train_step", "Tokenizer train step", command, format_table(rows), write,
                   notes, doc=doc)
    return rows


def main(argv=None, command: str | None = None) -> list[Row]:
    return common.run_main(run, "bench.train_step", __doc__.splitlines()[0], argv, command,
                           "tiny only; do not write the doc", "timed steps per case")


if __name__ == "__main__":
    common.ensure_fake_devices()
    main()
