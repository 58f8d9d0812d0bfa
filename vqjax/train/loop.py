"""What every trainer shares: the optimizer from the config, the step helpers (finite checks, EMA,
host transfer) and the outer loop (restore or init, checkpoints, SIGTERM, logging, periodic work).

A trainer (`tokenizer.py`, `maskgit.py`) builds its mesh, input, model and state shardings, and
jits its own `train_step` with its donation and shardings, top to bottom in one function; it then
hands `train_loop` the jitted init and step, the global batches and its periodic hooks (images,
eval). The loop owns everything that makes a run resumable and observable:

- state is restored from the newest checkpoint that restores whole (a damaged one is moved to
  checkpoints_aside/ with a warning; `Resume(step=N)` picks one) onto the current mesh (any
  device count), with the input iterator's position, or created sharded by the trainer's jitted
  `init_state`. Before that the saved config is compared with this one
  (`validate.check_resume_config`): another model is refused in one line, changes to the model or
  the data stream are refused with the fields named, safe ones are printed. A run already at
  total_steps returns at once, without compiling. One line on stdout says which happened;
- the step is compiled after the restore, and all processes meet at a barrier before the first
  step (compilation takes a different time on each host);
- metrics logged after the restored step (by a run killed before its next checkpoint) are
  rewound, so metrics.jsonl and TensorBoard read as one run;
- checkpoints every `checkpoint_every_steps` (0: only at the end and on interrupt) and at the end
  (Orbax, async, atomic, free space checked first); SIGTERM (a preempted TPU VM, `scancel`) and
  Ctrl-C finish the current step, save, and stop; a second Ctrl-C aborts that save;
- every `log_every_steps`: metrics to metrics.jsonl / TensorBoard / the progress bar, with
  steps/s, images/s and MFU; `nonfinite="error"` stops on a non-finite step with a clear error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax import data as data_lib
from vqjax.evaluation.host import to_host  # noqa: F401 (trainers call loop.to_host)
from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import mesh as mesh_lib
from vqjax.train import metrics_writer, perf, validate

log = logging.getLogger("vqjax.train")


class NonFiniteError(FloatingPointError):
    """A step produced NaN/Inf with config.nonfinite='error'."""


# ------------------------------------------------------------------------------------------------
# Config -> optimizer
# ------------------------------------------------------------------------------------------------
def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    if opt.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, opt.lr, max(opt.warmup_steps, 1)),
             optax.constant_schedule(opt.lr)], [opt.warmup_steps])
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, opt.lr, max(opt.warmup_steps, 1), max(total_steps, opt.warmup_steps + 1),
            end_value=opt.lr * 0.01)
    raise ValueError(f"config.optimizer.schedule={opt.schedule!r}; choose one of "
                     f"{', '.join(validate.LR_SCHEDULES)}")


def build_optimizer(opt, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = learning_rate_schedule(opt, total_steps)
    if opt.name == "adam":
        tx = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    elif opt.name == "lion":
        tx = optax.lion(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r}; choose one of "
                         f"{', '.join(validate.OPTIMIZERS)}")
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx, schedule


# ------------------------------------------------------------------------------------------------
# Step helpers (inside jit)
# ------------------------------------------------------------------------------------------------
def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def ema_decay_at(decay: float, step) -> jax.Array:
    """The EMA decay after `step` updates: min(decay, (1 + step) / (10 + step)), the warm-up of
    TensorFlow's ExponentialMovingAverage(num_updates=step). Without it an EMA of 0.999 still
    holds 82% of the random init after 200 steps, and short runs sample from noise."""
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def ema_update(ema, params, decay: float, step):
    """d * ema + (1 - d) * params with d = ema_decay_at(decay, step) (decay 0: a copy of params)."""
    d = ema_decay_at(decay, step)
    return jax.tree.map(lambda e, p: (d * e + (1 - d) * p).astype(p.dtype), ema, params)


def keep_if_finite(finite, new_state, old_state):
    """The step's result when `finite`, else the old state with only `step` advanced; both with
    `skipped_steps` counting the dropped updates. A `lax.cond` rather than a `jnp.where` per leaf:
    the per-leaf selects fused into one huge elementwise program (tens of thousands of ops for
    the tiny tokenizer, a 3-7x longer compile)."""
    kept = jax.lax.cond(finite, lambda: new_state,
                        lambda: old_state.replace(step=old_state.step + 1))
    return kept.replace(skipped_steps=old_state.skipped_steps + (~finite).astype(jnp.int32))


def scan_microbatches(fn, init, xs, k: int):
    """`lax.scan(fn, init, xs)` over k micro-batches; a plain call when k == 1 (XLA:CPU runs
    convolutions inside a scan many times slower, even a length-1 one)."""
    if k == 1:
        carry, out = fn(init, jax.tree.map(lambda x: x[0], xs))
        return carry, jax.tree.map(lambda x: x[None], out)
    return jax.lax.scan(fn, init, xs)


def microbatches(tree, k: int):
    """Leading axis B -> [k, B/k, ...] for `lax.scan` over micro-batches."""
    return jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), tree)


# ------------------------------------------------------------------------------------------------
# Host side
# ------------------------------------------------------------------------------------------------
def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    return json.loads(config.to_json_best_effort())


def check_process_slice(sharding, global_batch_size: int) -> None:
    """Each process must feed the contiguous rows [p*B/P, (p+1)*B/P) its devices hold."""
    p, count = jax.process_index(), jax.process_count()
    if count == 1:
        return
    index_map = sharding.addressable_devices_indices_map((global_batch_size,))
    rows = sorted({i for idx in index_map.values()
                   for i in range(*idx[0].indices(global_batch_size))})
    per = global_batch_size // count
    if rows != list(range(p * per, (p + 1) * per)):
        raise RuntimeError(f"process {p} holds batch rows {rows[0]}..{rows[-1]}, not the "
                           f"contiguous slice {p * per}..{(p + 1) * per - 1} the input pipeline "
                           "gives it; check the mesh's device order")


def eval_batch_size(config, mesh) -> int:
    """The global eval batch: at most config.batch_size, a multiple of the device count."""
    batch_size = min(config.batch_size, max(config.eval_examples, mesh.size))
    return batch_size - batch_size % mesh.size


def eval_batches(make_iterator: Callable[[int], Any], config, mesh, keys: Sequence[str]):
    """Yields (batch index, global batch) over the first config.eval_examples of an eval stream
    (`data.first_examples`): `keys` of each local batch plus "mask" (float32, 0 for padding and
    for rows past eval_examples, so sums count exactly eval_examples).
    `make_iterator(global_batch_size)` opens the stream (eval mode: it pads its last batch and
    gives "mask")."""
    batch_size = eval_batch_size(config, mesh)
    with make_iterator(batch_size) as it:
        for b, local in data_lib.first_examples(it, config.eval_examples, batch_size,
                                                process_index=jax.process_index()):
            yield b, mesh_lib.global_batch(mesh, {**{k: local[k] for k in keys},
                                                  "mask": local["mask"].astype(np.float32)})


def add_sums(totals, sums):
    """Running totals of host dicts of sums (None to start)."""
    return sums if totals is None else jax.tree.map(np.add, totals, sums)


def compile_step(train_step, *args):
    """`train_step` (a `jax.jit`-wrapped step, its donation and shardings set where it is
    defined) compiled for `args`, and its FLOPs per call (0 when the backend has no cost
    analysis)."""
    compiled = train_step.lower(*args).compile()
    return compiled, perf.compiled_flops(compiled)


class GlobalBatches:
    """The training batches as global arrays on `mesh` (the `keys` of each local batch of
    `local_iter`), with the input iterator's position (`get_state`/`set_state`, saved with each
    checkpoint) and its count of skipped examples."""

    def __init__(self, local_iter, mesh, keys: Sequence[str]):
        self.local_iter = local_iter
        self.mesh = mesh
        self.keys = tuple(keys)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, jax.Array]:
        local = next(self.local_iter)
        return mesh_lib.global_batch(self.mesh, {k: local[k] for k in self.keys})

    def get_state(self) -> dict:
        return self.local_iter.get_state()

    def set_state(self, state: dict) -> None:
        self.local_iter.set_state(state)

    @property
    def num_skipped(self) -> int:
        return self.local_iter.num_skipped


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Hook:
    """`fn(step, state, batch, writer)` every `every` steps and at the last step (every=0: never).
    A returned dict of scalars is written at that step."""
    every: int
    fn: Callable[[int, Any, Any, metrics_writer.MetricWriter], Mapping[str, float] | None]

    def due(self, step: int, total_steps: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == total_steps)


@dataclasses.dataclass(frozen=True)
class Resume:
    """How a run resumes. `step`: restore this checkpoint (`launch.train --step=N`; the later
    ones are moved to checkpoints_aside/) instead of the newest one that restores whole.
    `accept_config_changes`: continue even with changes to fields that change the model or the
    data stream (printed), instead of refusing them."""
    step: int | None = None
    accept_config_changes: bool = False


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the run after the current step; the checkpoint is saved."""


class SaveAborted(KeyboardInterrupt):
    """A second Ctrl-C arrived before the interrupt's checkpoint was written; it was abandoned
    (Orbax writes into a temporary folder, so the earlier checkpoints are untouched)."""


class _StopSignals:
    """SIGTERM (preemption, `scancel`) and SIGINT (Ctrl-C) ask for a checkpoint after the current
    step; a second SIGINT aborts at once. Installed only in the main thread (signal handlers
    cannot be set elsewhere), and restored on exit."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            again = " (press Ctrl-C again to abort without saving)" \
                if signum == signal.SIGINT else ""
            # os.write, not logging: a handler may run while the logging lock is held.
            os.write(2, f"\n{signal.Signals(signum).name}: saving a checkpoint after the current "
                        f"step, then stopping{again}\n".encode())
        elif signum == signal.SIGINT:
            raise SaveAborted("second Ctrl-C: stopped without saving")

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def announce(message: str) -> None:
    """One line on stdout (process 0): absl and the progress bar keep logging on stderr."""
    if jax.process_index() == 0:
        print(message, flush=True)


def finished_step(checkpointer: ckpt_lib.Checkpointer, total_steps: int,
                  resume: Resume) -> int | None:
    """The step of a complete checkpoint at or past total_steps (the run is done), else None."""
    steps = checkpointer.all_steps()
    step = resume.step if resume.step is not None else (steps[-1] if steps else None)
    if step is None or step not in steps or step < total_steps:
        return None
    return None if checkpointer.missing_files(step) else step


def train_loop(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    init_state: Callable[[jax.Array], Any],
    train_step: Callable[..., tuple[Any, Mapping[str, jax.Array]]],
    step_args: tuple = (),
    batches: GlobalBatches,
    hooks: Sequence[Hook] = (),
    progress_fields: Mapping[str, str] = (),
    resume: Resume = Resume(),
) -> dict:
    """Train (or resume) in `workdir` until config.total_steps, SIGTERM or Ctrl-C; the last
    logged metrics ({} when the run had already finished). `config` has been checked
    (`validate.check_config`) by the trainer.

    `init_state(rng)` is the trainer's jitted init (its out_shardings are the state's
    shardings, which restoring uses too). `train_step(state, *step_args, batch) -> (state,
    metrics)` is the trainer's jitted update step (state donated); `step_args` are arguments
    that stay fixed over the run (a MaskGIT's frozen tokenizer variables). It is compiled here,
    for the first batch, after the checkpoint manager exists and the state is restored, so that
    every process reaches the manager's first cross-process barrier together, before any long
    compilation; a finished run never compiles it. Its metrics must include "train/finite".
    `batches` yields the global batches and holds the input position saved with checkpoints.
    `progress_fields` maps progress-bar names to metric keys.

    Prints one line on stdout first: `resumed from step N (checkpoint PATH)`, `starting from
    scratch`, or `run already finished at step N ...` (then returns without compiling).
    Ctrl-C saves, then raises `Interrupted`; a second Ctrl-C raises `SaveAborted`.
    """
    is_main = jax.process_index() == 0
    config_dict = config_to_dict(config)
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    try:
        done = finished_step(checkpointer, config.total_steps, resume)
        if done is not None:
            validate.check_same_model(checkpointer.restore_config(done), config_dict,
                                      workdir=workdir)
            announce(f"run already finished at step {done} (checkpoint "
                     f"{checkpointer.step_path(done)}); nothing to do. Raise "
                     "--config.total_steps to train on")
            checkpointer.close()
            return {}
        if checkpointer.all_steps():
            saved = checkpointer.newest_config(resume.step)
            changes = []
            if saved is not None:
                changes = validate.check_resume_config(
                    saved[1], config_dict, workdir=workdir, step=saved[0],
                    accept_changes=resume.accept_config_changes)
            state, data_state, _, start_step = checkpointer.restore_with_fallback(
                jax.eval_shape(init_state, jax.random.key(config.seed)), resume.step)
            batches.set_state(data_state)
            if changes and is_main:
                log.warning("config changed since checkpoint %d (saved with the next "
                            "checkpoint):\n  %s", start_step, "\n  ".join(changes))
            announce(f"resumed from step {start_step} "
                     f"(checkpoint {checkpointer.step_path(start_step)})")
        else:
            if resume.step is not None:
                raise ckpt_lib.CheckpointError(f"no checkpoint {resume.step} to resume from: "
                                               f"{checkpointer.directory} holds none")
            state = init_state(jax.random.key(config.seed))
            start_step = 0
            announce("starting from scratch")
        first_batch = next(batches)  # the step is compiled for its shapes and shardings
        step_fn, flops_per_step = compile_step(train_step, state, *step_args, first_batch)
        if jax.process_count() > 1:
            # Compilation takes a different time on each host; the first step's collectives give
            # up if one host arrives much later (gloo: 30 s), so start together.
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("vqjax.train_loop.compiled")
    except BaseException:
        checkpointer.detach()
        try:
            checkpointer.close()
        except Exception:
            pass
        raise

    if is_main:  # the config this run trains with (also saved with every checkpoint)
        path = Path(checkpointer.workdir) / "config.json"
        path.with_suffix(".json.tmp").write_text(json.dumps(config_dict, indent=2))
        os.replace(path.with_suffix(".json.tmp"), path)
    writer = metrics_writer.MetricWriter(checkpointer.workdir, enabled=is_main,
                                         resume_step=start_step)
    progress = metrics_writer.Progress(config.total_steps, start_step, enabled=is_main)
    peak_flops = perf.peak_flops_per_device() * jax.device_count() if flops_per_step else 0.0
    last_saved = {"step": start_step}

    def save(step: int, force: bool = False) -> None:
        if step == last_saved["step"]:  # e.g. SIGTERM right after a periodic save
            return
        checkpointer.save(step, state, batches.get_state(), config_dict, force=force)
        last_saved["step"] = step

    def check_finite(step: int, finite) -> None:
        if config.nonfinite == "error" and not finite:
            raise NonFiniteError(
                f"step {step}: non-finite loss or gradients (config.nonfinite='error'); "
                "set config.nonfinite='skip' to drop such updates instead")

    last_metrics: dict = {}
    timer_start, timer_step = time.perf_counter(), start_step
    step = start_step
    stop = _StopSignals()
    aborted = False
    try:
        while step < config.total_steps:
            batch = next(batches) if first_batch is None else first_batch
            first_batch = None
            state, metrics = step_fn(state, *step_args, batch)
            step += 1

            if step % config.log_every_steps == 0 or step == config.total_steps:
                metrics = {k: float(v) for k, v in to_host(metrics).items()}
                check_finite(step, metrics["train/finite"])
                steps_per_s = (step - timer_step) / max(time.perf_counter() - timer_start, 1e-9)
                metrics.update({
                    "perf/steps_per_s": steps_per_s,
                    "perf/images_per_s": steps_per_s * config.batch_size,
                    "data/skipped_examples": float(batches.num_skipped),
                })
                if peak_flops:
                    metrics["perf/mfu"] = flops_per_step * steps_per_s / peak_flops
                writer.write_scalars(step, metrics)
                progress.update(step, **{name: metrics.get(key, 0.0)
                                         for name, key in dict(progress_fields).items()})
                last_metrics = metrics
                timer_start, timer_step = time.perf_counter(), step
            elif config.nonfinite == "error":
                check_finite(step, to_host(metrics["train/finite"]))

            for hook in hooks:
                if hook.due(step, config.total_steps):
                    scalars = hook.fn(step, state, batch, writer)
                    if scalars:
                        writer.write_scalars(step, scalars)
                        last_metrics = {**last_metrics, **scalars}
            if hooks and any(h.due(step, config.total_steps) for h in hooks):
                timer_start, timer_step = time.perf_counter(), step  # keep img/s for training

            every = config.checkpoint_every_steps  # 0: only at the end and on interrupt
            if (every and step % every == 0) or step == config.total_steps:
                save(step)
            if stop.received is not None:
                log.warning("%s: saving a final checkpoint at step %d and exiting",
                            signal.Signals(stop.received).name, step)
                save(step, force=True)
                checkpointer.wait()  # a second Ctrl-C here abandons this save
                break
    except SaveAborted:
        aborted = True
        raise
    finally:
        try:
            if aborted:
                checkpointer.detach()  # leave the temporary folder; the next start removes it
            else:
                checkpointer.close()
        finally:
            progress.close()
            writer.close()
            stop.restore()
    if stop.received == signal.SIGINT:
        raise Interrupted(f"interrupted at step {step}: saved checkpoint "
                          f"{checkpointer.step_path(step)}; rerun the same command to resume")
    return last_metrics
