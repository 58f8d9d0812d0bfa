"""The tokenizer's total generator and discriminator losses, with the papers' weights as presets.

    config = LossConfig.maskgit()             # or LossConfig.vit_vqgan(), or LossConfig(...)
    lpips_fn, lpips_params = load_lpips("vgg16")
    loss, metrics = generator_loss(
        config, images=x, reconstructions=x_rec, quantizer_loss=q_out.loss,
        fake_logits=disc(x_rec), perceptual_fn=functools.partial(lpips_fn, lpips_params), step=step)
    d_loss, d_metrics, lecam_state = discriminator_loss(
        config, discriminator_fn=disc, real_images=x, fake_images=x_rec, step=step)

Generator:  l2 * L2 + l1 * L1 + logit_laplace * NLL + perceptual * LPIPS          ("reconstruction")
            + adopt(step) * adversarial * [adaptive] * G_gan
            + quantizer * [ramp(step)] * quantizer_loss
Discriminator: adopt(step) * (D_gan + R1(gamma) + lecam * LeCam)

`metrics` reports every raw (unweighted) term, the effective adversarial weight and the totals.
All branching is on the (static) config, never on data, so both functions run under `jit`.

Presets (PAPERS.md):
- ViT-VQGAN: L2 1.0, perceptual 0.1, adversarial 0.1 (non-saturating, StyleGAN discriminator),
  logit-Laplace off (0.1 when enabled), quantizer loss 1.0 (its commitment weight lives in the
  quantizer's own loss).
- MaskGIT tokenizer: L2 1.0, perceptual 0.1, adversarial 0.1 non-saturating, R1 "10", quantizer loss
  1.0. The quantizer's own weights live in the quantizer's options, not here: MaskGIT's
  q_latent + 0.25 e_latent + 0.1 entropy is `vq` with `ema_update=False`, `commitment_weight=0.25`,
  `entropy_loss_weight=0.1`, `entropy_temperature=0.01` (as `configs/vqgan.py:maskgit` sets it);
  this preset only weights the quantizer's total by 1.0. MaskGIT/MAGVIT's R1 code multiplies
  E||grad||^2 by its cost 10 with no 1/2, so in our gamma/2 convention r1_gamma = 20.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from vqjax.losses import adversarial, reconstruction

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss weights and options (hashable; `LossConfig(**config.loss)` from ml_collections)."""

    l2_weight: float = 1.0
    l1_weight: float = 0.0
    logit_laplace_weight: float = 0.0
    logit_laplace_eps: float = reconstruction.LOGIT_LAPLACE_EPS
    perceptual_weight: float = 0.1
    adversarial_weight: float = 0.1
    gan_loss: str = "non_saturating"  # or "hinge"
    adaptive_weight: bool = False  # taming's grad-norm ratio (pass `adaptive_weight=` at call)
    disc_start_step: int = 0  # GAN terms (G and D) are off before this step
    quantizer_weight: float = 1.0
    # bsq-vit's codebook ramp (`transcoder/losses/vqperceptual.py`): the quantizer loss's weight is
    # quantizer_weight * (r + multiplier * (1 - r)), r = min(step, rampup_steps) / rampup_steps,
    # i.e. `multiplier` times the weight at step 0, falling linearly to the weight itself at
    # `rampup_steps` (bsq-vit: 3 and 2,000). 0 steps: no ramp.
    quantizer_rampup_steps: int = 0
    quantizer_rampup_multiplier: float = 1.0
    r1_gamma: float = 0.0  # gamma / 2 * E||grad_x D(x)||^2 on real images
    lecam_weight: float = 0.0
    lecam_decay: float = 0.99

    def __post_init__(self):
        if self.gan_loss not in adversarial.GENERATOR_LOSSES:
            raise ValueError(
                f"LossConfig: unknown gan_loss {self.gan_loss!r}; available: "
                f"{', '.join(sorted(adversarial.GENERATOR_LOSSES))}"
            )
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            numeric = not isinstance(value, bool)
            if numeric and field.name.endswith(("_weight", "_gamma", "_multiplier", "_steps")):
                if value < 0:
                    raise ValueError(f"LossConfig: {field.name} must be >= 0, got {value}")

    @classmethod
    def vit_vqgan(cls, logit_laplace: bool = False, **overrides) -> "LossConfig":
        """ViT-VQGAN (Yu et al. 2021): L2 1.0, perceptual 0.1, adversarial 0.1 [+ Laplace 0.1]."""
        defaults = dict(
            l2_weight=1.0,
            logit_laplace_weight=0.1 if logit_laplace else 0.0,
            perceptual_weight=0.1,
            adversarial_weight=0.1,
            gan_loss="non_saturating",
            quantizer_weight=1.0,
        )
        return cls(**{**defaults, **overrides})

    @classmethod
    def maskgit(cls, **overrides) -> "LossConfig":
        """MaskGIT's VQGAN tokenizer: L2 1.0, perceptual 0.1, non-saturating 0.1, R1 cost 10."""
        defaults = dict(
            l2_weight=1.0,
            perceptual_weight=0.1,
            adversarial_weight=0.1,
            gan_loss="non_saturating",
            r1_gamma=20.0,  # = MaskGIT's cost 10 on E||grad||^2 (no 1/2)
            quantizer_weight=1.0,
        )
        return cls(**{**defaults, **overrides})

    def replace(self, **changes) -> "LossConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Callable[..., LossConfig]] = {
    "vit_vqgan": LossConfig.vit_vqgan,
    "maskgit": LossConfig.maskgit,
}


def loss_config(name: str, **overrides) -> LossConfig:
    """A preset by name ("vit_vqgan", "maskgit") with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown loss preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name](**overrides)


def quantizer_weight(config: LossConfig, step: Array | int = 0) -> Array:
    """The quantizer loss's weight at `step`: `quantizer_weight`, times bsq-vit's ramp
    `r + quantizer_rampup_multiplier * (1 - r)`, r = min(step, quantizer_rampup_steps) /
    quantizer_rampup_steps, when `quantizer_rampup_steps` > 0."""
    weight = jnp.float32(config.quantizer_weight)
    if config.quantizer_rampup_steps <= 0:
        return weight
    r = jnp.minimum(jnp.asarray(step, jnp.float32), config.quantizer_rampup_steps)
    r = r / config.quantizer_rampup_steps
    return weight * (r + config.quantizer_rampup_multiplier * (1.0 - r))


def _require(value, what: str, weight_name: str, weight: float):
    if value is None:
        raise ValueError(f"{weight_name}={weight} > 0 needs {what}; pass it or set the weight to 0")
    return value


def generator_loss(
    config: LossConfig,
    *,
    images: Array,
    reconstructions: Array,
    quantizer_loss: Array | float = 0.0,
    fake_logits: Array | None = None,
    perceptual_fn: Callable[[Array, Array], Array] | None = None,
    logit_laplace_predictions: Array | None = None,
    adaptive_weight: Array | None = None,
    step: Array | int = 0,
) -> tuple[Array, dict[str, Array]]:
    """The tokenizer's (generator's) loss and its metrics.

    images, reconstructions: [B, H, W, 3] in [-1, 1]. `fake_logits`: D(reconstructions) (needed when
    adversarial_weight > 0). `perceptual_fn(reconstructions, images) -> [B]` (e.g. LPIPS with its
    params bound). `logit_laplace_predictions`: the decoder's [B, H, W, 6] (mu, log b) output; then
    pass `reconstructions=reconstruction.logit_laplace_to_pixels(predictions)` for the pixel terms.
    `adaptive_weight`: taming's ratio from `adversarial.adaptive_weight(..., disc_weight=1.0)`,
    required when `config.adaptive_weight`; it multiplies `adversarial_weight`.
    """
    metrics: dict[str, Array] = {}
    metrics["l2"] = reconstruction.l2_loss(reconstructions, images)
    metrics["l1"] = reconstruction.l1_loss(reconstructions, images)
    rec_loss = config.l2_weight * metrics["l2"] + config.l1_weight * metrics["l1"]

    if config.logit_laplace_weight > 0 or logit_laplace_predictions is not None:
        predictions = _require(
            logit_laplace_predictions, "logit_laplace_predictions", "logit_laplace_weight",
            config.logit_laplace_weight,
        )
        metrics["logit_laplace"] = reconstruction.logit_laplace_loss(
            predictions, images, config.logit_laplace_eps
        )
        rec_loss = rec_loss + config.logit_laplace_weight * metrics["logit_laplace"]

    if config.perceptual_weight > 0 or perceptual_fn is not None:
        fn = _require(perceptual_fn, "perceptual_fn", "perceptual_weight", config.perceptual_weight)
        metrics["perceptual"] = jnp.mean(fn(reconstructions, images).astype(jnp.float32))
        rec_loss = rec_loss + config.perceptual_weight * metrics["perceptual"]
    metrics["reconstruction"] = rec_loss

    loss = rec_loss
    if config.adversarial_weight > 0 or fake_logits is not None:
        logits = _require(
            fake_logits, "fake_logits", "adversarial_weight", config.adversarial_weight
        )
        metrics["generator_gan"] = adversarial.gan_generator_loss(logits, config.gan_loss)
        weight = jnp.float32(config.adversarial_weight)
        if config.adaptive_weight:
            if adaptive_weight is None:
                raise ValueError(
                    "LossConfig.adaptive_weight=True needs adaptive_weight= (from "
                    "vqjax.losses.adversarial.adaptive_weight)"
                )
            metrics["adaptive_weight"] = jax.lax.stop_gradient(
                jnp.asarray(adaptive_weight, jnp.float32)
            )
            weight = weight * metrics["adaptive_weight"]
        weight = adversarial.adopt_weight(weight, step, config.disc_start_step)
        metrics["adversarial_weight"] = weight
        loss = loss + weight * metrics["generator_gan"]

    metrics["quantizer"] = jnp.asarray(quantizer_loss, jnp.float32)
    weight = quantizer_weight(config, step)
    if config.quantizer_rampup_steps > 0:
        metrics["quantizer_weight"] = weight
    loss = loss + weight * metrics["quantizer"]
    metrics["loss"] = loss
    return loss, metrics


def discriminator_loss(
    config: LossConfig,
    *,
    discriminator_fn: Callable[[Array], Array],
    real_images: Array,
    fake_images: Array,
    lecam_state: adversarial.LeCamState | None = None,
    step: Array | int = 0,
) -> tuple[Array, dict[str, Array], Any]:
    """The discriminator's loss, its metrics and the new LeCam state (None stays None).

    `discriminator_fn(images) -> logits` is the discriminator with its params bound; it must be
    pure (no BatchNorm statistics updates) because R1 differentiates it w.r.t. the images. The
    fakes are wrapped in `stop_gradient`: this loss trains the discriminator only.
    """
    fake_images = jax.lax.stop_gradient(fake_images)
    metrics: dict[str, Array] = {}
    if config.r1_gamma > 0:
        metrics["r1"], real_logits = adversarial.r1_penalty(
            discriminator_fn, real_images, config.r1_gamma
        )
    else:
        real_logits = discriminator_fn(real_images)
    fake_logits = discriminator_fn(fake_images)
    metrics["discriminator_gan"] = adversarial.gan_discriminator_loss(
        real_logits, fake_logits, config.gan_loss
    )
    metrics["real_logits"] = jnp.mean(real_logits.astype(jnp.float32))
    metrics["fake_logits"] = jnp.mean(fake_logits.astype(jnp.float32))
    loss = metrics["discriminator_gan"] + metrics.get("r1", 0.0)

    if config.lecam_weight > 0:
        state = _require(lecam_state, "lecam_state (adversarial.lecam_init())", "lecam_weight",
                         config.lecam_weight)
        metrics["lecam"], lecam_state = adversarial.lecam_step(
            state, real_logits, fake_logits, config.lecam_decay
        )
        loss = loss + config.lecam_weight * metrics["lecam"]

    factor = adversarial.adopt_weight(1.0, step, config.disc_start_step)
    metrics["discriminator_factor"] = factor
    loss = factor * loss
    metrics["loss"] = loss
    return loss, metrics, lecam_state
