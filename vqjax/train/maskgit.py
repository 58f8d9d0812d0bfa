"""The MaskGIT trainer: a masked-token transformer over the tokens of a trained, frozen tokenizer.

    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskgit \
        --config.tokenizer_workdir=/tmp/tokenizer_run

The tokenizer (its config from its checkpoint's `config` item, EMA params and quantizer state) is
restored read-only onto this run's mesh. Images are encoded to token indices inside the jitted step
(`stop_gradient`), masked per the schedule (`maskgit.mask_tokens`), labels dropped with
`masking.class_dropout` (classifier-free guidance), and the masked cross-entropy (label smoothing)
minimised. As in the tokenizer trainer: one jitted donated step over a ("data", "fsdp") mesh,
randomness `fold_in(seed, step)`, Orbax checkpoints with the data position (exact resume), SIGTERM
saves, non-finite updates skipped, metrics to metrics.jsonl / TensorBoard / a progress bar, and
every `image_every_steps` a PNG grid of class-conditional samples decoded by the tokenizer.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax import data as data_lib
from vqjax.models import maskgit as maskgit_lib
from vqjax.quantizers.linen import QUANTIZER_STATE
from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import mesh as mesh_lib
from vqjax.train import metrics_writer
from vqjax.train.tokenizer import (NonFiniteError, TokenizerTrainer, _all_finite, _select,
                                   _check_process_slice, build_optimizer, compute_dtype,
                                   config_to_dict, to_host)

log = logging.getLogger("vqjax.train.maskgit")


# ------------------------------------------------------------------------------------------------
# The frozen tokenizer
# ------------------------------------------------------------------------------------------------
@flax.struct.dataclass
class Tokenizer:
    """A restored tokenizer: the module (static) and its inference variables (EMA params)."""
    model: Any = flax.struct.field(pytree_node=False)
    variables: Any
    config: Any = flax.struct.field(pytree_node=False)
    step: int = flax.struct.field(pytree_node=False)


def restore_tokenizer(tokenizer_workdir: str, mesh) -> Tokenizer:
    """The tokenizer of `tokenizer_workdir`'s latest checkpoint, its state placed on `mesh`."""
    if not tokenizer_workdir:
        raise ValueError("config.tokenizer_workdir is required: pass "
                         "--config.tokenizer_workdir=DIR, the workdir of a trained tokenizer run "
                         "(python -m launch.train --config=configs/vitvqgan.py:...)")
    directory = Path(tokenizer_workdir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"config.tokenizer_workdir={tokenizer_workdir!r} has no "
                                f"checkpoints/ directory; train a tokenizer there first")
    checkpointer = ckpt_lib.Checkpointer(tokenizer_workdir, read_only=True, async_save=False)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise FileNotFoundError(f"config.tokenizer_workdir={tokenizer_workdir!r} holds no "
                                    "complete checkpoint; train the tokenizer for at least "
                                    "checkpoint_every_steps steps")
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        if config.get("trainer", "tokenizer") != "tokenizer":
            raise ValueError(f"config.tokenizer_workdir={tokenizer_workdir!r} is a "
                             f"{config.trainer!r} run, not a tokenizer run")
        config.loss.perceptual_weight = 0.0  # no VGG16 needed: only the state layout matters
        trainer = TokenizerTrainer(config, mesh)
        abstract, shardings = trainer.state_shardings()
        state, _, _ = checkpointer.restore(step, ckpt_lib.abstract_like(abstract, shardings))
    finally:
        checkpointer.close()
    variables = {"params": state.ema_params, QUANTIZER_STATE: state.quantizer_state}
    log.info("tokenizer: %s step %d", tokenizer_workdir, step)
    return Tokenizer(model=trainer.model, variables=variables, config=config, step=step)


def encode(tokenizer_model, variables, images) -> jax.Array:
    """Images [B, H, W, 3] in [-1, 1] -> token indices [B, h, w(, Q)] (no gradient)."""
    _, indices, _ = tokenizer_model.apply(variables, images, train=False,
                                          method=tokenizer_model.encode)
    return jax.lax.stop_gradient(indices).astype(jnp.int32)


def decode(tokenizer_model, variables, tokens, logit_laplace_eps: float | None = None) -> jax.Array:
    """Token indices -> images in [-1, 1] (logit-laplace decoder outputs mapped to pixels)."""
    images = tokenizer_model.apply(variables, tokens, method=tokenizer_model.decode_indices)
    if images.shape[-1] == 6:
        from vqjax.losses import reconstruction

        eps = reconstruction.LOGIT_LAPLACE_EPS if logit_laplace_eps is None else logit_laplace_eps
        images = reconstruction.logit_laplace_to_pixels(images, eps)
    return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Config -> objects
# ------------------------------------------------------------------------------------------------
def build_maskgit(config, tokenizer_model, num_classes: int | None) -> maskgit_lib.MaskGIT:
    m = config.model
    overrides: dict[str, Any] = dict(num_classes=num_classes, posemb=m.posemb,
                                     tie_head=m.tie_head, dtype=compute_dtype(config))
    if m.dropout >= 0:
        overrides.update(dropout_rate=m.dropout, attention_dropout_rate=m.dropout)
    return maskgit_lib.for_quantizer(tokenizer_model, m.size, prediction=m.prediction or None,
                                     **overrides)


def resolved_num_classes(config, dataset_classes: int | None) -> int | None:
    n = config.model.num_classes
    if n == 0:
        return None
    if n < 0:
        if not dataset_classes:
            raise ValueError(f"config.model.num_classes=-1 takes the class count from the "
                             f"dataset, but {config.dataset.name!r} has no ClassLabel; set "
                             "--config.model.num_classes=0 (unconditional) or a count")
        return int(dataset_classes)
    return int(n)


def decode_options(sample_cfg, **overrides) -> dict:
    s = {**sample_cfg.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
    return dict(num_steps=int(s["num_steps"]), temperature=float(s["temperature"]),
                choice_temperature=float(s["choice_temperature"]),
                guidance_scale=float(s["guidance_scale"]) if s["guidance_scale"] else None,
                top_k=int(s["top_k"]) or None, top_p=float(s["top_p"]) or None,
                schedule=s["schedule"])


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    opt_state: Any
    skipped_steps: jax.Array  # int32 []


class MaskGITTrainer:
    """Static pieces of a MaskGIT run (model, tokenizer module, optimizer, token grid)."""

    def __init__(self, config, mesh, tokenizer: Tokenizer, num_classes: int | None):
        self.config = config
        self.mesh = mesh
        self.tokenizer = tokenizer
        if config.grad_accum_steps != 1:
            raise ValueError("config.grad_accum_steps > 1 is not supported by the MaskGIT trainer "
                             "yet")
        self.model = build_maskgit(config, tokenizer.model, num_classes)
        self.tx, self.schedule = build_optimizer(config.optimizer, config.total_steps)
        size = config.dataset.image_size
        self.image_shape = (size, size, 3)
        self.grid = tuple(tokenizer.model.token_grid(size, size))
        self.token_shape = self.grid + ((self.model.num_indices,) if self.model.index_axes else ())

    def init_state(self, rng) -> TrainState:
        tokens = jnp.zeros((2, *self.token_shape), jnp.int32)
        labels = None if self.model.num_classes is None else jnp.zeros((2,), jnp.int32)
        params = self.model.init({"params": rng}, tokens, labels)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.tx.init(params), skipped_steps=jnp.zeros((), jnp.int32))

    def state_shardings(self):
        abstract = jax.eval_shape(self.init_state, jax.random.key(0))
        return abstract, mesh_lib.state_shardings(self.mesh, abstract, (),
                                                  self.config.mesh.fsdp_min_size)

    def loss_fn(self, params, tokens, labels, rng):
        m = self.config.masking
        mask_rng, label_rng, dropout_rng = jax.random.split(rng, 3)
        masked, mask = maskgit_lib.mask_tokens(
            mask_rng, tokens, m.schedule, m.min_mask_rate, mask_token_id=self.model.mask_token_id,
            index_axes=self.model.index_axes)
        if labels is not None and m.class_dropout > 0:
            labels = maskgit_lib.drop_labels(label_rng, labels, self.model.null_label,
                                             m.class_dropout)
        logits = self.model.apply({"params": params}, masked, labels, train=True,
                                  rngs={"dropout": dropout_rng})
        return maskgit_lib.loss_and_metrics(logits, tokens, mask, self.model.prediction,
                                            m.label_smoothing)

    def train_step(self, state: TrainState, tokenizer_variables, batch):
        rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        tokens = encode(self.tokenizer.model, tokenizer_variables, batch["image"])
        labels = batch["label"] if self.model.num_classes is not None else None
        grads, metrics = jax.grad(self.loss_fn, has_aux=True)(state.params, tokens, labels, rng)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = _all_finite((grads, metrics["loss"], params))
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        kept = _select(finite, new, state.replace(step=state.step + 1))
        kept = kept.replace(skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32))
        metrics = {f"loss/{k}": v for k, v in metrics.items()}
        metrics.update({
            "train/grad_norm": optax.tree.norm(grads),
            "train/learning_rate": self.schedule(state.step),
            "train/finite": finite.astype(jnp.float32),
            "train/skipped_steps": kept.skipped_steps.astype(jnp.float32),
        })
        return kept, metrics

    def sample(self, params, tokenizer_variables, rng, labels, **options):
        """(tokens [B, h, w(, Q)], images [B, H, W, 3]) for labels [B] (None: unconditional, with
        `batch_size` in options)."""
        out = maskgit_lib.generate(self.model, {"params": params}, rng, labels, grid=self.grid,
                                   **options)
        eps = self.tokenizer.config.loss.get("logit_laplace_eps")
        return out.tokens, decode(self.tokenizer.model, tokenizer_variables, out.tokens, eps)

    def jit_sample(self, batch_size: int | None = None, **options):
        if self.model.num_classes is None:
            fn = lambda p, v, r, labels: self.sample(  # noqa: E731
                p, v, r, None, batch_size=labels.shape[0], **options)
        else:
            fn = functools.partial(self.sample, **options)
        return jax.jit(fn, out_shardings=mesh_lib.replicated(self.mesh))


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def make_mesh(config):
    devices = jax.devices()[:config.mesh.num_devices] if config.mesh.num_devices else None
    return mesh_lib.make_mesh(config.mesh.data, config.mesh.fsdp, devices)


def resolve_config(config, tokenizer: Tokenizer, dataset_classes) -> ml_collections.ConfigDict:
    """A copy with dataset.image_size and model.num_classes filled in (saved in checkpoints)."""
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
    if not config.dataset.image_size:
        config.dataset.image_size = int(tokenizer.config.dataset.image_size)
    config.model.num_classes = resolved_num_classes(config, dataset_classes) or 0
    return config


def preview_labels(num_classes: int | None, per_class: int, max_classes: int = 16) -> np.ndarray:
    classes = min(num_classes or 1, max_classes)
    return np.repeat(np.arange(classes, dtype=np.int32), max(per_class, 1))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train (or resume) a MaskGIT in `workdir`; returns the last logged metrics."""
    is_main = jax.process_index() == 0
    mesh = make_mesh(config)
    if config.batch_size % mesh.size:
        raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the "
                         f"{mesh.size} devices of the mesh")
    tokenizer = restore_tokenizer(config.tokenizer_workdir, mesh)

    # -- input ------------------------------------------------------------------------------------
    ds = config.dataset
    image_size = ds.image_size or int(tokenizer.config.dataset.image_size)
    train_iter = data_lib.input_pipeline(
        ds.name, ds.train_split, global_batch_size=config.batch_size, image_size=image_size,
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
        train=True, data_dir=ds.data_dir or None, crop=ds.crop, area_range=(ds.crop_area_min, 1.0),
        flip=ds.flip, num_workers=ds.num_workers)
    config = resolve_config(config, tokenizer, train_iter.info.num_classes)
    trainer = MaskGITTrainer(config, mesh, tokenizer, config.model.num_classes or None)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    _check_process_slice(batch_sharding, config.batch_size)

    # -- state --------------------------------------------------------------------------------------
    abstract, shardings = trainer.state_shardings()
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
    start_step = checkpointer.latest_step()
    if start_step is not None:
        state, data_state, _ = checkpointer.restore(
            start_step, ckpt_lib.abstract_like(abstract, shardings))
        train_iter.set_state(data_state)
        log.info("resumed from step %d", start_step)
    else:
        state = jax.jit(trainer.init_state, out_shardings=shardings)(jax.random.key(config.seed))
        start_step = 0

    # -- compiled step ------------------------------------------------------------------------------
    replicated = mesh_lib.replicated(mesh)
    tok_shardings = jax.tree.map(lambda x: x.sharding, tokenizer.variables)
    step_fn = jax.jit(trainer.train_step,
                      in_shardings=(shardings, tok_shardings, batch_sharding),
                      out_shardings=(shardings, replicated), donate_argnums=(0,))
    s = config.sample
    labels = preview_labels(trainer.model.num_classes, s.per_class)
    sample_fn = trainer.jit_sample(**decode_options(s))

    writer = metrics_writer.MetricWriter(workdir, enabled=is_main)
    if is_main and start_step == 0:
        (writer.workdir / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    progress = metrics_writer.Progress(config.total_steps, start_step, enabled=is_main)

    stop_requested = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.__setitem__("flag", True))
    last_saved = {"step": start_step}

    def save(step, force=False):
        if step == last_saved["step"]:
            return
        checkpointer.save(step, state, train_iter.get_state(), config_to_dict(config), force=force)
        last_saved["step"] = step

    last_metrics: dict = {}
    timer_start, timer_step = time.perf_counter(), start_step
    step = start_step
    try:
        while step < config.total_steps:
            local = next(train_iter)
            batch = mesh_lib.global_batch(mesh, {"image": local["image"], "label": local["label"]})
            state, metrics = step_fn(state, tokenizer.variables, batch)
            step += 1

            if step % config.log_every_steps == 0 or step == config.total_steps:
                metrics = {k: float(v) for k, v in to_host(metrics).items()}
                if config.nonfinite == "error" and not metrics["train/finite"]:
                    raise NonFiniteError(
                        f"step {step}: non-finite loss or gradients (config.nonfinite='error'); "
                        "set config.nonfinite='skip' to drop such updates instead")
                elapsed = time.perf_counter() - timer_start
                steps_per_s = (step - timer_step) / max(elapsed, 1e-9)
                metrics.update({
                    "perf/steps_per_s": steps_per_s,
                    "perf/images_per_s": steps_per_s * config.batch_size,
                    "data/skipped_examples": float(train_iter.num_skipped),
                })
                writer.write_scalars(step, metrics)
                progress.update(step, loss=metrics["loss/loss"], acc=metrics["loss/accuracy"],
                                img_s=metrics["perf/images_per_s"])
                last_metrics = metrics
                timer_start, timer_step = time.perf_counter(), step
            elif config.nonfinite == "error" and not to_host(metrics["train/finite"]):
                raise NonFiniteError(f"step {step}: non-finite loss or gradients "
                                     "(config.nonfinite='error')")

            if config.image_every_steps and (step % config.image_every_steps == 0
                                             or step == config.total_steps):
                rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
                _, images = to_host(sample_fn(state.params, tokenizer.variables, rng,
                                              jnp.asarray(labels)))
                writer.write_images(step, "samples", metrics_writer.image_grid(
                    images, columns=max(s.per_class, 1) if len(labels) > 1 else None))

            if step % config.checkpoint_every_steps == 0 or step == config.total_steps:
                save(step)
            if stop_requested["flag"]:
                log.warning("SIGTERM: saving a final checkpoint at step %d and exiting", step)
                save(step, force=True)
                break
    finally:
        checkpointer.close()
        progress.close()
        writer.close()
        signal.signal(signal.SIGTERM, previous_handler)
    return last_metrics


# ------------------------------------------------------------------------------------------------
# Restoring a finished run for sampling
# ------------------------------------------------------------------------------------------------
def load_for_sampling(workdir: str, mesh, step: int | None = None):
    """(trainer, params, checkpoint step) of a MaskGIT run, the tokenizer restored via its config."""
    if not (Path(workdir) / "checkpoints").is_dir():
        raise FileNotFoundError(f"{workdir!r} has no checkpoints/ directory (not a MaskGIT run?)")
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True, async_save=False)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir!r} holds no complete checkpoint")
        config = ml_collections.ConfigDict(checkpointer.restore_config(step))
        if config.get("trainer") != "maskgit":
            raise ValueError(f"{workdir!r} is a {config.get('trainer')!r} run, not a MaskGIT run")
        tokenizer = restore_tokenizer(config.tokenizer_workdir, mesh)
        trainer = MaskGITTrainer(config, mesh, tokenizer, config.model.num_classes or None)
        abstract, shardings = trainer.state_shardings()
        state, _, _ = checkpointer.restore(step, ckpt_lib.abstract_like(abstract, shardings))
    finally:
        checkpointer.close()
    return trainer, state.params, step
