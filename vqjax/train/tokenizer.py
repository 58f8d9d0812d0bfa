"""The tokenizer trainer (ViT-VQGAN, conv VQGAN): generator + discriminator, one jitted step.

    python -m launch.train --config=configs/vitvqgan.py:tiny --workdir=/tmp/run

The whole step is one pure function `(state, batch) -> (state, metrics)` compiled with `jax.jit`
over a ("data", "fsdp") mesh: the batch is split over every device, parameters and optimizer states
are replicated or fsdp-sharded by `mesh.state_shardings`, and the state is donated. Randomness is
`fold_in(seed, step)`, the input pipeline is a function of (seed, step), and the checkpoint holds
everything else, so a killed run resumes bit for bit.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vqjax import data as data_lib
from vqjax.evaluation import codebook, image_metrics
from vqjax.losses import adversarial, perceptual, reconstruction
from vqjax.losses.total import LossConfig, discriminator_loss, generator_loss
from vqjax.models import discriminator as disc_lib
from vqjax.models import taming_vqgan, vit_vqgan, vqgan
from vqjax.quantizers import metrics as quantizer_metrics
from vqjax.quantizers.linen import QUANTIZER_STATE, RNG_STREAM
from vqjax.train import mesh as mesh_lib
from vqjax.train.config import optional_field, quantizer_options
from vqjax.train import metrics_writer
from vqjax.train import loop, validate
from vqjax.train.loop import NonFiniteError, config_to_dict, to_host  # noqa: F401 (re-exported)

log = logging.getLogger("vqjax.train")

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


# ------------------------------------------------------------------------------------------------
# Config -> objects
# ------------------------------------------------------------------------------------------------
def compute_dtype(config) -> Any:
    if config.compute_dtype not in DTYPES:
        raise ValueError(f"config.compute_dtype={config.compute_dtype!r}; choose one of "
                         f"{', '.join(DTYPES)}")
    return DTYPES[config.compute_dtype]


VQGAN_FIELDS = ("filters", "num_res_blocks", "channel_multipliers", "norm_groups", "shortcut",
                "pixel_range")


def build_tokenizer(config: ml_collections.ConfigDict) -> nn.Module:
    """The tokenizer named by config.model.name, with the quantizer of config.quantizer."""
    name, options = quantizer_options(config.quantizer)
    m = config.model
    common = dict(quantizer=name, quantizer_options=tuple(sorted(options.items())),
                  dtype=compute_dtype(config))
    if m.name == "vit_vqgan":
        return vit_vqgan.create(
            m.size, patch_size=m.patch_size, posemb=m.posemb, feed_forward=m.mlp_type,
            dropout_rate=m.dropout, latent_dim=optional_field(config, "model.latent_dim"),
            logit_laplace=config.loss.logit_laplace_weight > 0, **common)
    if m.name == "vqgan":
        # Optional architecture fields (absent or empty: the size preset's), e.g. those
        # launch.convert infers from a released checkpoint.
        extra = {key: m[key] for key in VQGAN_FIELDS if m.get(key) not in (None, 0, "", ())}
        if "channel_multipliers" in extra:
            extra["channel_multipliers"] = tuple(extra["channel_multipliers"])
        return vqgan.create(m.size, embedding_dim=optional_field(config, "model.embedding_dim"),
                            **extra, **common)
    if m.name == "taming_vqgan":  # every architecture field explicit: converters set them
        return taming_vqgan.TamingVQGAN(
            filters=m.filters, channel_multipliers=tuple(m.channel_multipliers),
            num_res_blocks=m.num_res_blocks, attention_levels=tuple(m.attention_levels),
            z_channels=m.z_channels, embedding_dim=optional_field(config, "model.embedding_dim"),
            dropout_rate=m.dropout, precision=m.precision or None, **common)
    raise ValueError(f"config.model.name={m.name!r}; choose one of vit_vqgan, vqgan, "
                     "taming_vqgan")


def build_discriminator(config) -> nn.Module:
    d = config.discriminator
    dtype = compute_dtype(config)
    if d.name == "stylegan":
        return disc_lib.StyleGANDiscriminator(
            filters=d.filters, channel_multipliers=tuple(d.channel_multipliers),
            mbstd_group_size=d.get("mbstd_group_size", 4), dtype=dtype)
    if d.name == "patchgan":
        return disc_lib.PatchGANDiscriminator(filters=d.filters, num_layers=d.num_layers,
                                              norm="group", dtype=dtype)
    raise ValueError(f"config.discriminator.name={d.name!r}; choose one of stylegan, patchgan")


def build_loss_config(config) -> LossConfig:
    """The `LossConfig` of config.loss (its `preset` field only names where it came from)."""
    fields = {k: v for k, v in config.loss.to_dict().items() if k not in ("preset",)}
    return LossConfig(**fields)


# ------------------------------------------------------------------------------------------------
# Train state
# ------------------------------------------------------------------------------------------------
@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 []
    params: Any
    quantizer_state: Any
    opt_state: Any
    ema_params: Any
    disc_params: Any
    disc_opt_state: Any
    lecam_state: Any
    skipped_steps: jax.Array  # int32 []: updates dropped because of NaN/Inf
    # The quantizer state averaged like ema_params (its float leaves; flags and counters live):
    # the codebook of an EMA codebook is built from the live encoder's latents, so it belongs
    # with `params`; `ema_params` is evaluated, sampled and pre-encoded with this one.
    ema_quantizer_state: Any = None

    @staticmethod
    def fill_missing(restored: dict) -> dict:
        """Fields that checkpoints written before they existed lack, from the restored ones:
        `ema_quantizer_state` starts as a copy of the live quantizer state."""
        return {"ema_quantizer_state": jax.tree.map(jnp.copy, restored["quantizer_state"])}

    def inference_variables(self, use_ema: bool = True) -> tuple[Any, Any]:
        """(params, quantizer state) to evaluate, sample and encode with: the EMA params with the
        EMA quantizer state, or the live params with the live state (consistent pairs)."""
        if use_ema:
            return self.ema_params, self.ema_quantizer_state
        return self.params, self.quantizer_state


def ema_quantizer_update(ema_state, state, decay: float, step):
    """`loop.ema_update` of the quantizer state's floating leaves (codebook, EMA sums, usage);
    other leaves (the k-means `initted` flag, integer counters) are the live ones."""
    d = loop.ema_decay_at(decay, step)
    return jax.tree.map(
        lambda e, x: (d * e + (1 - d) * x).astype(x.dtype)
        if jnp.issubdtype(x.dtype, jnp.floating) else x, ema_state, state)


class TokenizerTrainer:
    """Everything static about a run (model, losses, optimizers, mesh); methods are the pieces of
    the step and the loop. `train_and_evaluate(config, workdir)` drives it."""

    def __init__(self, config: ml_collections.ConfigDict, mesh):
        self.config = config
        self.mesh = mesh
        self.model = build_tokenizer(config)
        self.disc = build_discriminator(config)
        self.loss_cfg = build_loss_config(config)
        if self.loss_cfg.adaptive_weight:
            raise ValueError("config.loss.adaptive_weight=True is not supported by the tokenizer "
                             "trainer (vqjax.losses.adversarial.adaptive_weight is available for "
                             "custom loops); use a fixed config.loss.adversarial_weight")
        self.tx, self.schedule = loop.build_optimizer(config.optimizer, config.total_steps)
        d = config.discriminator
        self.disc_tx = optax.adam(d.lr, b1=d.b1, b2=d.b2)
        self.lpips_params = None
        if self.loss_cfg.perceptual_weight > 0:
            _, self.lpips_params = perceptual.load_lpips("vgg16")
        self.image_shape = (config.dataset.image_size, config.dataset.image_size, 3)

    # -- init ------------------------------------------------------------------------------------
    def init_state(self, rng) -> TrainState:
        gen_rng, disc_rng = jax.random.split(rng)
        dummy = jnp.zeros((2, *self.image_shape), jnp.float32)
        variables = self.model.init({"params": gen_rng, RNG_STREAM: gen_rng}, dummy)
        params = variables["params"]
        disc_params = self.disc.init(disc_rng, dummy)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            quantizer_state=variables.get(QUANTIZER_STATE, {}),
            ema_quantizer_state=variables.get(QUANTIZER_STATE, {}),
            opt_state=self.tx.init(params),
            ema_params=params,
            disc_params=disc_params,
            disc_opt_state=self.disc_tx.init(disc_params),
            lecam_state=adversarial.lecam_init(),
            skipped_steps=jnp.zeros((), jnp.int32),
        )

    def state_shardings(self):
        abstract = jax.eval_shape(self.init_state, jax.random.key(0))
        rules = [(r"lpips", jax.sharding.PartitionSpec())]
        return abstract, mesh_lib.state_shardings(self.mesh, abstract, rules,
                                                  self.config.mesh.fsdp_min_size)

    # -- losses ----------------------------------------------------------------------------------
    def generator_terms(self, params, quantizer_state, disc_params, images, rng, step):
        """(loss, (metrics, new quantizer state, reconstructions))."""
        q_rng, dropout_rng = jax.random.split(rng)
        variables = {"params": params, QUANTIZER_STATE: quantizer_state}
        (outputs, aux), mutated = self.model.apply(
            variables, images, train=True, rngs={RNG_STREAM: q_rng, "dropout": dropout_rng},
            mutable=[QUANTIZER_STATE])
        laplace = None
        if self.loss_cfg.logit_laplace_weight > 0:
            laplace = outputs
            recon = reconstruction.logit_laplace_to_pixels(outputs, self.loss_cfg.logit_laplace_eps)
        else:
            recon = outputs
        fake_logits = None
        if self.loss_cfg.adversarial_weight > 0:
            fake_logits = self.disc.apply({"params": disc_params}, recon)
        perceptual_fn = None
        if self.lpips_params is not None:
            perceptual_fn = functools.partial(perceptual.lpips_distance, self.lpips_params)
        loss, metrics = generator_loss(
            self.loss_cfg, images=images, reconstructions=recon, quantizer_loss=aux.loss,
            fake_logits=fake_logits, perceptual_fn=perceptual_fn, logit_laplace_predictions=laplace,
            step=step)
        metrics = {f"loss/{k}": v for k, v in metrics.items()}
        metrics.update({f"quantizer/{k}": v for k, v in aux.metrics.items()})
        return loss, (metrics, mutated[QUANTIZER_STATE], recon)

    def discriminator_terms(self, disc_params, images, recon, lecam_state, step):
        fn = lambda x: self.disc.apply({"params": disc_params}, x)  # noqa: E731
        loss, metrics, lecam_state = discriminator_loss(
            self.loss_cfg, discriminator_fn=fn, real_images=images, fake_images=recon,
            lecam_state=lecam_state, step=step)
        return loss, ({f"disc/{k}": v for k, v in metrics.items()}, lecam_state)

    # -- the update step -------------------------------------------------------------------------
    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        config = self.config
        rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
        images = batch["image"]
        k = config.grad_accum_steps
        micro = loop.microbatches(images, k)
        gen_grad = jax.grad(self.generator_terms, has_aux=True)
        disc_grad = jax.grad(self.discriminator_terms, has_aux=True)

        def accumulate(carry, xs):
            g_sum, d_sum, qstate, lecam, _ = carry
            x, i = xs
            g, (metrics, qstate, recon) = gen_grad(
                state.params, qstate, state.disc_params, x, jax.random.fold_in(rng, i), state.step)
            d, (d_metrics, lecam) = disc_grad(state.disc_params, x, recon, lecam, state.step)
            add = lambda a, b: jax.tree.map(jnp.add, a, b)  # noqa: E731
            return (add(g_sum, g), add(d_sum, d), qstate, lecam, recon), {**metrics, **d_metrics}

        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)  # noqa: E731
        carry = (zeros(state.params), zeros(state.disc_params), state.quantizer_state,
                 state.lecam_state, jnp.zeros_like(micro[0]))
        (g, d, qstate, lecam, _), metrics = loop.scan_microbatches(accumulate, carry,
                                                                  (micro, jnp.arange(k)), k)
        g = jax.tree.map(lambda x: x / k, g)
        d = jax.tree.map(lambda x: x / k, d)
        metrics = jax.tree.map(jnp.mean, metrics)

        updates, opt_state = self.tx.update(g, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        d_updates, disc_opt_state = self.disc_tx.update(d, state.disc_opt_state, state.disc_params)
        disc_params = optax.apply_updates(state.disc_params, d_updates)
        ema = loop.ema_update(state.ema_params, params, config.ema_decay, state.step)
        ema_qstate = ema_quantizer_update(state.ema_quantizer_state, qstate, config.ema_decay,
                                          state.step)

        finite = loop.all_finite((g, d, metrics["loss/loss"], metrics["disc/loss"], params,
                                  disc_params))
        new = state.replace(
            step=state.step + 1,
            params=params, quantizer_state=qstate, opt_state=opt_state, ema_params=ema,
            ema_quantizer_state=ema_qstate,
            disc_params=disc_params, disc_opt_state=disc_opt_state, lecam_state=lecam)
        # A non-finite step changes nothing but the step counter and the skip count.
        kept = loop.keep_if_finite(finite, new, state)
        metrics.update({
            "train/grad_norm": optax.tree.norm(g),
            "train/disc_grad_norm": optax.tree.norm(d),
            "train/learning_rate": self.schedule(state.step),
            "train/finite": finite.astype(jnp.float32),
            "train/skipped_steps": kept.skipped_steps.astype(jnp.float32),
        })
        return kept, metrics

    # -- evaluation ------------------------------------------------------------------------------
    def reconstruct(self, params, quantizer_state, images):
        outputs, aux = self.model.apply({"params": params, QUANTIZER_STATE: quantizer_state},
                                        images, train=False)
        if self.loss_cfg.logit_laplace_weight > 0:
            outputs = reconstruction.logit_laplace_to_pixels(outputs, self.loss_cfg.logit_laplace_eps)
        return jnp.clip(outputs, -1.0, 1.0), aux


    def preview(self, params, quantizer_state, images, count: int = 8):
        """The first `count` inputs and their reconstructions, for the PNG grid."""
        recon, _ = self.reconstruct(params, quantizer_state, images[:count])
        return images[:count], recon

    def eval_sums(self, params, quantizer_state, images, mask):
        """Masked sums over one eval batch: L2, PSNR, image count and per-code counts."""
        recon, aux = self.reconstruct(params, quantizer_state, images)
        per_image_l2 = jnp.mean((recon - images) ** 2, axis=(1, 2, 3))
        codebook_size = self.model.built_quantizer().codebook_size
        return {
            "l2": jnp.sum(per_image_l2 * mask),
            "psnr": jnp.sum(jnp.where(mask > 0, image_metrics.psnr(recon, images, data_range=2.0),
                                      0.0)),
            "examples": jnp.sum(mask),
            "code_counts": quantizer_metrics.code_counts(aux.indices, codebook_size, mask),
        }


# ------------------------------------------------------------------------------------------------
# The run, top to bottom
# ------------------------------------------------------------------------------------------------
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       resume: loop.Resume = loop.Resume()) -> dict:
    """Train (or resume, as `resume` says) in `workdir`; returns the last logged metrics."""
    validate.check_config(config)  # every bad field named, before anything is built

    # ---- Mesh ------------------------------------------------------------------------------------
    mesh = mesh_lib.from_config(config)
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = mesh_lib.replicated(mesh)

    # ---- Input -----------------------------------------------------------------------------------
    ds = config.dataset
    train_iter = data_lib.dataset_pipeline(config, ds.train_split, config.batch_size,
                                           train=True)
    loop.check_process_slice(batch_sharding, config.batch_size)
    batches = loop.GlobalBatches(train_iter, mesh, ("image",))  # image: float32 [B, H, W, 3]

    # ---- Model & optimizer -----------------------------------------------------------------------
    trainer = TokenizerTrainer(config, mesh)

    # ---- Shard: state created (or restored) directly with its shardings ---------------------------
    _, state_shardings = trainer.state_shardings()
    init_state = jax.jit(trainer.init_state, out_shardings=state_shardings)

    # ---- Update step: (state, batch) -> (state, metrics); the state is donated --------------------
    train_step = jax.jit(trainer.train_step, donate_argnums=(0,),
                         in_shardings=(state_shardings, batch_sharding),
                         out_shardings=(state_shardings, replicated))

    # ---- Evaluation and images (hooks of the loop) -----------------------------------------------
    preview = jax.jit(trainer.preview, out_shardings=replicated)
    eval_sums = jax.jit(trainer.eval_sums, out_shardings=replicated)
    preview_images = {}

    def write_reconstructions(step, state, batch, writer):
        # The same eval images every time (the first of the eval split), so that grids from
        # successive steps compare; the training batch if the eval split cannot be read.
        if "image" not in preview_images:
            eval_images = first_eval_images(config, mesh)
            preview_images["image"] = batch["image"] if eval_images is None else eval_images
        images, recon = loop.to_host(preview(*state.inference_variables(),
                                             preview_images["image"]))
        grid = metrics_writer.comparison_grid(images, recon, pairs_per_row=4)
        caption = (f"step {step}: {ds.name}/{ds.eval_split} images (left of each pair) and their "
                   f"reconstructions (right), {ds.image_size} px, EMA params")
        writer.write_images(step, "reconstructions", metrics_writer.figure(grid, caption))

    def run_eval(step, state, batch, writer):
        return evaluate(trainer, state, eval_sums, mesh)

    # ---- Checkpoint & loop: restore or init, compile, train, save (loop.train_loop) ---------------
    return loop.train_loop(
        config, workdir, init_state=init_state, train_step=train_step, batches=batches,
        hooks=[loop.Hook(config.image_every_steps, write_reconstructions),
               loop.Hook(config.eval_every_steps, run_eval)],
        progress_fields={"loss": "loss/loss", "img_s": "perf/images_per_s",
                         "usage": "quantizer/usage"},
        resume=resume)


def eval_stream(config):
    """`make_iterator(global_batch_size)` over the eval split, for `loop.eval_batches`."""
    return functools.partial(data_lib.dataset_pipeline, config, config.dataset.eval_split,
                             train=False)


def first_eval_images(config, mesh, count: int = 8):
    """The first eval images as one global batch (a multiple of the device count), or None."""
    preview_config = ml_collections.ConfigDict(
        {"batch_size": max(count, mesh.size) // mesh.size * mesh.size, "eval_examples": count})
    batches = loop.eval_batches(eval_stream(config), preview_config, mesh, ("image",))
    try:
        return next(batches)[1]["image"]
    except (StopIteration, FileNotFoundError, ValueError) as e:
        log.warning("no eval images for the reconstruction grids (%s); using training crops", e)
        return None
    finally:
        batches.close()


def evaluate(trainer: TokenizerTrainer, state: TrainState, eval_sums, mesh) -> dict:
    """Reconstruction quality of the EMA params with the EMA quantizer state on `eval_examples`
    of the eval split."""
    config = trainer.config
    totals = None
    for _, batch in loop.eval_batches(eval_stream(config), config, mesh, ("image",)):
        totals = loop.add_sums(totals, loop.to_host(
            eval_sums(*state.inference_variables(), batch["image"], batch["mask"])))
    if totals is None:
        return {}
    examples = max(float(totals["examples"]), 1.0)
    counts = totals["code_counts"]
    return {
        "eval/l2": float(totals["l2"]) / examples,
        "eval/psnr": float(totals["psnr"]) / examples,
        "eval/usage": codebook.usage_from_counts(counts),
        "eval/perplexity": codebook.perplexity_from_counts(counts),
        "eval/examples": float(totals["examples"]),
    }
