"""Tokenizer losses: pixel reconstruction, LPIPS, GAN losses and regularizers, and their total.

    from vqjax import losses
    lpips_fn, lpips_params = losses.load_lpips("vgg16")
    config = losses.LossConfig.maskgit()
    loss, metrics = losses.generator_loss(config, images=x, reconstructions=x_rec, ...)

Everything is a pure function of arrays (LPIPS weights are passed in, frozen), so it all runs
under `jit`/`grad` inside one train step.
"""

from vqjax.losses.adversarial import (
    LeCamState,
    adaptive_weight,
    adaptive_weight_from_grads,
    adopt_weight,
    gan_discriminator_loss,
    gan_generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    lecam_init,
    lecam_regularization,
    lecam_step,
    lecam_update,
    non_saturating_discriminator_loss,
    non_saturating_generator_loss,
    r1_penalty,
    r1_penalty_from_gradients,
)
from vqjax.losses.perceptual import LPIPS, load_lpips, load_lpips_params, lpips_distance
from vqjax.losses.reconstruction import (
    l1_loss,
    l2_loss,
    logit_laplace_loss,
    logit_laplace_nll,
    logit_laplace_to_pixels,
    map_pixels,
    split_logit_laplace,
    unmap_pixels,
)
from vqjax.losses.total import (
    PRESETS,
    LossConfig,
    discriminator_loss,
    generator_loss,
    loss_config,
    quantizer_weight,
)

__all__ = [
    "LPIPS",
    "LeCamState",
    "LossConfig",
    "PRESETS",
    "adaptive_weight",
    "adaptive_weight_from_grads",
    "adopt_weight",
    "discriminator_loss",
    "gan_discriminator_loss",
    "gan_generator_loss",
    "generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "l1_loss",
    "l2_loss",
    "lecam_init",
    "lecam_regularization",
    "lecam_step",
    "lecam_update",
    "load_lpips",
    "load_lpips_params",
    "logit_laplace_loss",
    "logit_laplace_nll",
    "logit_laplace_to_pixels",
    "loss_config",
    "lpips_distance",
    "map_pixels",
    "non_saturating_discriminator_loss",
    "non_saturating_generator_loss",
    "quantizer_weight",
    "r1_penalty",
    "r1_penalty_from_gradients",
    "split_logit_laplace",
    "unmap_pixels",
]
