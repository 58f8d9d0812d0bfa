"""The MaskGIT trainer: a masked-token transformer over the tokens of a trained, frozen tokenizer.

    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskgit \
        --config.tokenizer_workdir=/tmp/tokenizer_run

The tokenizer is restored read-only onto this run's mesh by `vqjax.inference.load_tokenizer_of`
(the `vqjax.load` handle: its config from its checkpoint, EMA params and quantizer state; the step
`config.tokenizer_step` when present and >= 0, else the latest). Images are encoded to token indices inside the jitted step
(`stop_gradient`), masked per the schedule (`maskgit.mask_tokens`), labels dropped with
`masking.class_dropout` (classifier-free guidance), and the masked cross-entropy (label smoothing)
minimised. As in the tokenizer trainer: one jitted donated step over a ("data", "fsdp") mesh,
randomness `fold_in(seed, step)`, Orbax checkpoints with the data position (exact resume), SIGTERM
saves, non-finite updates skipped, metrics to metrics.jsonl / TensorBoard / a progress bar, and
every `image_every_steps` a PNG grid of class-conditional samples decoded by the tokenizer.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vqjax import data as data_lib
from vqjax import inference
from vqjax.data import tokens as tokens_lib
from vqjax.models import maskgit as maskgit_lib
from vqjax.paths import resolve
from vqjax.train import mesh as mesh_lib
from vqjax.train import metrics_writer
from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import loop, pinning, validate
from vqjax.train.config import optional_field
from vqjax.train.tokenizer import compute_dtype

log = logging.getLogger("vqjax.train.maskgit")


# ------------------------------------------------------------------------------------------------
# The frozen tokenizer: a `vqjax.inference.Tokenizer` handle (model, variables, config, step)
# ------------------------------------------------------------------------------------------------
Tokenizer = inference.Tokenizer
encode = inference.encode_indices
decode = inference.decode_indices


# ------------------------------------------------------------------------------------------------
# Config -> objects
# ------------------------------------------------------------------------------------------------
def build_maskgit(config, tokenizer_model, num_classes: int | None) -> maskgit_lib.MaskGIT:
    """The MaskGIT of config.model for the tokens of `tokenizer_model`. `model.size` is a preset
    name or [num_layers, width, num_heads, mlp_dim] (converted checkpoints of other sizes);
    `model.architecture` (absent: "vqjax") "bert" is MaskGIT's released network."""
    m = config.model
    overrides: dict[str, Any] = dict(num_classes=num_classes, posemb=m.posemb,
                                     tie_head=m.tie_head, dtype=compute_dtype(config))
    architecture = m.get("architecture", "vqjax")
    if architecture != "vqjax":
        overrides["architecture"] = architecture
    preset = m.size
    if not isinstance(preset, str):
        preset, overrides["size"] = "B", tuple(int(v) for v in m.size)
    if m.get("codebook_splits", 0):  # 0: the default (bits mode); index mode rejects other values
        overrides["codebook_splits"] = int(m.codebook_splits)
    if m.dropout >= 0:
        overrides.update(dropout_rate=m.dropout, attention_dropout_rate=m.dropout)
    return maskgit_lib.for_quantizer(tokenizer_model, preset, prediction=m.prediction or None,
                                     **overrides)


def resolved_num_classes(config, dataset_classes: int | None) -> int | None:
    """config.model.num_classes: 0 (unconditional) -> None; unset -> the dataset's class count."""
    n = optional_field(config, "model.num_classes")
    if n == 0:
        return None
    if n is None:
        if not dataset_classes:
            raise ValueError(f"config.model.num_classes unset takes the class count from the "
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
                schedule=s["schedule"], guidance_base=s.get("guidance_base", "uncond"),
                guidance_anneal=s.get("guidance_anneal", "none"))


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    opt_state: Any
    ema_params: Any  # EMA of params (config.ema_decay); a copy of params when the decay is 0
    skipped_steps: jax.Array  # int32 []


class MaskGITTrainer:
    """Static pieces of a MaskGIT run (model, tokenizer module, optimizer, token grid)."""

    def __init__(self, config, mesh, tokenizer: Tokenizer, num_classes: int | None):
        self.config = config
        self.mesh = mesh
        self.tokenizer = tokenizer
        self.model = build_maskgit(config, tokenizer.model, num_classes)
        self.tx, self.schedule = loop.build_optimizer(config.optimizer, config.total_steps)
        size = config.dataset.image_size
        self.image_shape = (size, size, 3)
        self.grid = tuple(tokenizer.model.token_grid(size, size))
        self.token_shape = self.grid + ((self.model.num_indices,) if self.model.index_axes else ())
        self.pre_encoded = bool(config.tokens_dir)

    def init_state(self, rng) -> TrainState:
        tokens = self.model.model_tokens(jnp.zeros((2, *self.token_shape), jnp.int32))
        labels = None if self.model.num_classes is None else jnp.zeros((2,), jnp.int32)
        params = self.model.init({"params": rng}, tokens, labels)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=self.tx.init(params), ema_params=params,
                          skipped_steps=jnp.zeros((), jnp.int32))

    def state_shardings(self):
        abstract = jax.eval_shape(self.init_state, jax.random.key(0))
        return abstract, mesh_lib.state_shardings(self.mesh, abstract, (),
                                                  self.config.mesh.fsdp_min_size)

    def inference_params(self, state: TrainState):
        """The params that sample and evaluate: the EMA when config.ema_decay > 0."""
        return state.ema_params if self.config.ema_decay > 0 else state.params

    @property
    def data_key(self) -> str:
        return "tokens" if self.pre_encoded else "image"

    def tokens_of(self, tokenizer_variables, batch) -> jax.Array:
        if self.pre_encoded:
            return batch["tokens"].astype(jnp.int32)
        return encode(self.tokenizer.model, tokenizer_variables, batch["image"])

    # -- the update step -------------------------------------------------------------------------
    def micro_loss(self, params, micro, total_masked, rng):
        """Masked cross-entropy of one micro-batch, scaled so that the micro-batch losses sum to
        the mean over every masked position of the whole batch (accumulation == one big batch)."""
        logits = self.model.apply({"params": params}, micro["masked"], micro.get("label"),
                                  train=True, rngs={"dropout": rng})
        _, metrics = maskgit_lib.loss_and_metrics(logits, micro["tokens"], micro["mask"],
                                                  self.model.prediction,
                                                  self.config.masking.label_smoothing)
        weight = jnp.sum(micro["mask"]) / total_masked
        metrics = {"loss": metrics["loss"] * weight, "accuracy": metrics["accuracy"] * weight,
                   "mask_rate": metrics["mask_rate"] / self.config.grad_accum_steps}
        return metrics["loss"], metrics

    def gradients(self, params, tokenizer_variables, batch, rng):
        """(grads, metrics) of the masked-token loss over `batch`, accumulated over
        config.grad_accum_steps micro-batches. Masking and class dropout are drawn for the whole
        batch first, so the accumulated gradient is the full-batch gradient (up to dropout)."""
        config, m = self.config, self.config.masking
        mask_rng, label_rng, dropout_rng = jax.random.split(rng, 3)
        tokens = self.tokens_of(tokenizer_variables, batch)
        masked, targets, mask = maskgit_lib.mask_for_training(
            self.model, mask_rng, tokens, m.schedule, m.min_mask_rate)
        inputs = {"masked": masked, "tokens": targets, "mask": mask}
        if self.model.num_classes is not None:
            labels = batch["label"]
            if m.class_dropout > 0:
                labels = maskgit_lib.drop_labels(label_rng, labels, self.model.null_label,
                                                 m.class_dropout)
            inputs["label"] = labels
        total_masked = jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
        k = config.grad_accum_steps
        grad_fn = jax.grad(self.micro_loss, has_aux=True)

        def accumulate(grad_sum, xs):
            micro, i = xs
            g, metrics = grad_fn(params, micro, total_masked, jax.random.fold_in(dropout_rng, i))
            return jax.tree.map(jnp.add, grad_sum, g), metrics

        grads, metrics = loop.scan_microbatches(accumulate, jax.tree.map(jnp.zeros_like, params),
                                                (loop.microbatches(inputs, k), jnp.arange(k)), k)
        return grads, jax.tree.map(jnp.sum, metrics)

    def train_step(self, state: TrainState, tokenizer_variables, batch):
        rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        grads, metrics = self.gradients(state.params, tokenizer_variables, batch, rng)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = loop.all_finite((grads, metrics["loss"], params))
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=loop.ema_update(state.ema_params, params,
                                                       self.config.ema_decay, state.step))
        kept = loop.keep_if_finite(finite, new, state)
        metrics = {f"loss/{k}": v for k, v in metrics.items()}
        metrics.update({
            "train/grad_norm": optax.tree.norm(grads),
            "train/learning_rate": self.schedule(state.step),
            "train/finite": finite.astype(jnp.float32),
            "train/skipped_steps": kept.skipped_steps.astype(jnp.float32),
        })
        return kept, metrics

    # -- evaluation ------------------------------------------------------------------------------
    def eval_sums(self, params, tokenizer_variables, batch, rng):
        """Sums over one eval batch of the masked-token NLL (no label smoothing) and accuracy,
        with training's masking distribution drawn from `rng`; padded rows (mask 0) excluded.
        Bits mode: per masked bit group (nats per group, group accuracy)."""
        tokens = self.tokens_of(tokenizer_variables, batch)
        masked, targets, mask = maskgit_lib.mask_for_training(
            self.model, rng, tokens, self.config.masking.schedule,
            self.config.masking.min_mask_rate)
        mask = mask & (batch["mask"] > 0)[:, None]
        labels = batch["label"] if self.model.num_classes is not None else None
        logits = self.model.apply({"params": params}, masked, labels)
        _, metrics = maskgit_lib.loss_and_metrics(logits, targets, mask, self.model.prediction,
                                                  label_smoothing=0.0)
        count = jnp.sum(mask).astype(jnp.float32)
        return {"nll": metrics["loss"] * count, "accuracy": metrics["accuracy"] * count,
                "masked": count, "examples": jnp.sum(batch["mask"])}

    # -- sampling --------------------------------------------------------------------------------
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
# Input
# ------------------------------------------------------------------------------------------------
def make_input(config, split: str, batch_size: int, *, train: bool, image_size: int):
    """The iterator of `split`: pre-encoded tokens (config.tokens_dir) or images of the dataset."""
    ds = config.dataset
    process = dict(process_index=jax.process_index(), process_count=jax.process_count())
    if config.tokens_dir:
        return tokens_lib.token_pipeline(config.tokens_dir, split, batch_size, config.seed,
                                         train=train, flip=None if ds.flip else False, **process)
    return data_lib.dataset_pipeline(config, split, batch_size, train=train, image_size=image_size)


def check_tokens_dir(config, tokenizer: Tokenizer, token_shape) -> dict:
    """The tokens_info.json of config.tokens_dir, checked against this run's tokenizer."""
    info = tokens_lib.read_info(config.tokens_dir)
    problems = []
    if int(info["tokenizer_step"]) != tokenizer.step:
        problems.append(f"it was encoded by tokenizer step {info['tokenizer_step']}, this run "
                        f"uses tokenizer step {tokenizer.step}")
    elif info.get("tokenizer_fingerprint", tokenizer.fingerprint) != tokenizer.fingerprint:
        problems.append(f"it was encoded by a tokenizer step {tokenizer.step} with fingerprint "
                        f"{info['tokenizer_fingerprint']}, this run's is {tokenizer.fingerprint}")
    if tuple(info["token_shape"]) != tuple(token_shape):
        problems.append(f"its token shape is {tuple(info['token_shape'])}, this run's is "
                        f"{tuple(token_shape)}")
    if problems:
        raise ValueError(f"config.tokens_dir={config.tokens_dir!r} does not match "
                         f"config.tokenizer_workdir={config.tokenizer_workdir!r}: "
                         + "; ".join(problems) + ". Re-encode with python -m launch.encode_tokens"
                         f" --tokenizer_step={tokenizer.step}")
    if Path(info["tokenizer_workdir"]).resolve() != Path(config.tokenizer_workdir).resolve():
        log.warning("tokens_dir was encoded from %s, this run's tokenizer is %s (same step and "
                    "shape: assuming a copy)", info["tokenizer_workdir"], config.tokenizer_workdir)
    return info


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def resolve_config(config, tokenizer: Tokenizer, dataset_classes) -> ml_collections.ConfigDict:
    """A copy with dataset.image_size, model.num_classes and the tokenizer pin (tokenizer_step,
    tokenizer_fingerprint) filled in (saved in checkpoints)."""
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy
    if not config.dataset.image_size:
        config.dataset.image_size = int(tokenizer.config.dataset.image_size)
    config.model.num_classes = resolved_num_classes(config, dataset_classes) or 0
    config.tokenizer_step = tokenizer.step  # the pin: resume, sampling and evaluation use it
    config.tokenizer_fingerprint = tokenizer.fingerprint
    return config


def preview_labels(num_classes: int | None, per_class: int, max_classes: int = 16) -> np.ndarray:
    classes = min(num_classes or 1, max_classes)
    return np.repeat(np.arange(classes, dtype=np.int32), max(per_class, 1))


def pinned_tokenizer(config, workdir: str) -> tuple[int | None, str]:
    """(step, fingerprint) of the tokenizer checkpoint a MaskGIT run in `workdir` uses: the pin
    saved in its checkpoints when it has any, else config.tokenizer_step (-1: the latest, pinned
    from then on) and config.tokenizer_fingerprint. A different step on the command line is
    refused at resume by the config comparison (it changes the model)."""
    step, fingerprint = pinning.pinned_step(config), pinning.pinned_fingerprint(config)
    if (Path(workdir) / "checkpoints").is_dir():
        checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True, async_save=False)
        try:
            saved = checkpointer.newest_config()
        finally:
            checkpointer.close()
        if saved is not None:
            step = step if step is not None else pinning.pinned_step(saved[1])
            fingerprint = fingerprint or pinning.pinned_fingerprint(saved[1])
    return step, fingerprint


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       resume: loop.Resume = loop.Resume()) -> dict:
    """Train (or resume, as `resume` says) a MaskGIT in `workdir`; returns the last logged
    metrics. The tokenizer is the pinned checkpoint (`pinned_tokenizer`), protected from
    deletion in its workdir by a marker (`pinning.pin`)."""
    validate.check_config(config)  # every bad field named, before anything is built
    workdir = resolve(workdir)

    # ---- Mesh ------------------------------------------------------------------------------------
    mesh = mesh_lib.from_config(config)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = mesh_lib.replicated(mesh)
    ckpt_lib.check_workdir(workdir)

    # ---- The frozen tokenizer: restored read-only onto this mesh, pinned --------------------------
    tokenizer_step, fingerprint = pinned_tokenizer(config, workdir)
    tokenizer = inference.load_tokenizer_of(config, mesh, step=tokenizer_step,
                                            fingerprint=fingerprint)
    if jax.process_index() == 0:
        pinning.pin(config.tokenizer_workdir, tokenizer.step, tokenizer.fingerprint, workdir)

    # ---- Input: images (encoded inside the step) or pre-encoded tokens, and labels ----------------
    image_size = config.dataset.image_size or int(tokenizer.config.dataset.image_size)
    train_iter = make_input(config, config.dataset.train_split, config.batch_size, train=True,
                            image_size=image_size)
    if config.tokens_dir and image_size != train_iter.info.image_size:
        raise ValueError(f"config.dataset.image_size={image_size} but config.tokens_dir holds "
                         f"tokens of {train_iter.info.image_size}px images")
    config = resolve_config(config, tokenizer, train_iter.info.num_classes)

    # ---- Model & optimizer -----------------------------------------------------------------------
    trainer = MaskGITTrainer(config, mesh, tokenizer, config.model.num_classes or None)
    if config.tokens_dir:
        check_tokens_dir(config, tokenizer, trainer.token_shape)
    loop.check_process_slice(batch_sharding, config.batch_size)
    batches = loop.GlobalBatches(train_iter, mesh, (trainer.data_key, "label"))

    # ---- Shard: state created (or restored) directly with its shardings ---------------------------
    _, state_shardings = trainer.state_shardings()
    init_state = jax.jit(trainer.init_state, out_shardings=state_shardings)
    tokenizer_shardings = jax.tree.map(lambda x: x.sharding, tokenizer.variables)

    # ---- Update step: (state, tokenizer variables, batch) -> (state, metrics); state donated ------
    train_step = jax.jit(trainer.train_step, donate_argnums=(0,),
                         in_shardings=(state_shardings, tokenizer_shardings, batch_sharding),
                         out_shardings=(state_shardings, replicated))

    # ---- Evaluation and samples (hooks of the loop) ----------------------------------------------
    s = config.sample
    labels = jnp.asarray(preview_labels(trainer.model.num_classes, s.per_class))
    sample_fn = trainer.jit_sample(**decode_options(s))
    eval_sums = jax.jit(trainer.eval_sums, out_shardings=replicated)

    def write_samples(step, state, batch, writer):
        rng = jax.random.fold_in(jax.random.key(config.seed + 1), step)
        _, images = loop.to_host(sample_fn(trainer.inference_params(state), tokenizer.variables,
                                           rng, labels))
        grid = metrics_writer.image_grid(
            images, columns=max(s.per_class, 1) if len(labels) > 1 else None)
        what = (f"one row per class {int(labels[0])}..{int(labels[-1])}"
                if trainer.model.num_classes is not None else "unconditional")
        writer.write_images(step, "samples", metrics_writer.figure(
            grid, f"step {step}: {len(labels)} samples, {what}, {s.num_steps} decoding steps, "
                  "EMA params"))

    def run_eval(step, state, batch, writer):
        return evaluate(trainer, trainer.inference_params(state), eval_sums)

    # ---- Checkpoint & loop: restore or init, compile, train, save (loop.train_loop) ---------------
    return loop.train_loop(
        config, workdir, init_state=init_state, train_step=train_step,
        step_args=(tokenizer.variables,), batches=batches,
        hooks=[loop.Hook(config.image_every_steps, write_samples),
               loop.Hook(config.eval_every_steps, run_eval)],
        progress_fields={"loss": "loss/loss", "acc": "loss/accuracy",
                         "img_s": "perf/images_per_s"},
        resume=resume)


def evaluate(trainer: MaskGITTrainer, params, eval_sums) -> dict:
    """Masked-token NLL and accuracy of `params` on `eval_examples` of the eval split, with the
    same masks at every evaluation (rng from config.seed and the batch index)."""
    config = trainer.config
    make_iterator = functools.partial(make_input, config, config.dataset.eval_split, train=False,
                                      image_size=config.dataset.image_size)
    totals = None
    for b, batch in loop.eval_batches(make_iterator, config, trainer.mesh,
                                      (trainer.data_key, "label")):
        rng = jax.random.fold_in(jax.random.key(config.seed + 2), b)
        totals = loop.add_sums(totals, loop.to_host(
            eval_sums(params, trainer.tokenizer.variables, batch, rng)))
    if totals is None:
        return {}
    masked = max(float(totals["masked"]), 1.0)
    return {"eval/nll": float(totals["nll"]) / masked,
            "eval/accuracy": float(totals["accuracy"]) / masked,
            "eval/examples": float(totals["examples"])}
