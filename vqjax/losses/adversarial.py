"""GAN losses and regularizers for tokenizer training, as pure functions of logits and arrays.

Logits may have any shape (StyleGAN discriminator: [B]; PatchGAN: [B, h, w]); every loss averages
over all of them, in float32.

- Non-saturating (Goodfellow 2014; StyleGAN, MaskGIT):
      D: E[softplus(-D(x))] + E[softplus(D(G(z)))]          G: E[softplus(-D(G(z)))]
- Hinge (taming VQGAN's default):
      D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]           G: -E[D(G(z))]
  Both discriminator losses are the plain sum of the real and fake terms (MaskGIT's convention);
  taming multiplies its discriminator loss by 0.5, which only rescales D's learning rate under Adam.
- R1 (Mescheder 2018), StyleGAN's convention: gamma / 2 * E_x ||grad_x D(x)||^2 on real images,
  the squared norm summed over all pixels and channels of one image, then averaged over the batch.
  (MaskGIT/MAGVIT's `r1_gradient_penalty` computes cost * E||grad||^2: its cost c is gamma = 2c.)
- LeCam (Tseng et al. 2021): keeps EMAs alpha_R, alpha_F of the mean real / fake logits as explicit
  state and penalizes E[(D(x) - alpha_F)^2] + E[(D(G(z)) - alpha_R)^2]; by default one-sided, with
  relu(D(x) - alpha_F) and relu(alpha_R - D(G(z))), as the official code (google/lecam-gan) does.
- taming's adaptive weight: ||grad_w L_rec|| / (||grad_w L_gan|| + 1e-4), clipped to [0, 1e4],
  times the discriminator weight, with w the decoder's last layer; and `adopt_weight`, which turns
  the GAN terms on at a given step.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


def _f32(x) -> Array:
    return jnp.asarray(x).astype(jnp.float32)


# -- losses ----------------------------------------------------------------------------------------


def non_saturating_generator_loss(fake_logits: Array) -> Array:
    """-E[log sigmoid(D(G(z)))] = E[softplus(-fake)]."""
    return jnp.mean(jax.nn.softplus(-_f32(fake_logits)))


def non_saturating_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """-E[log sigmoid(D(x))] - E[log(1 - sigmoid(D(G(z))))]."""
    return jnp.mean(jax.nn.softplus(-_f32(real_logits))) + jnp.mean(
        jax.nn.softplus(_f32(fake_logits))
    )


def hinge_generator_loss(fake_logits: Array) -> Array:
    """-E[D(G(z))]."""
    return -jnp.mean(_f32(fake_logits))


def hinge_discriminator_loss(real_logits: Array, fake_logits: Array) -> Array:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return jnp.mean(jax.nn.relu(1.0 - _f32(real_logits))) + jnp.mean(
        jax.nn.relu(1.0 + _f32(fake_logits))
    )


GENERATOR_LOSSES = {"non_saturating": non_saturating_generator_loss, "hinge": hinge_generator_loss}
DISCRIMINATOR_LOSSES = {
    "non_saturating": non_saturating_discriminator_loss,
    "hinge": hinge_discriminator_loss,
}


def gan_generator_loss(fake_logits: Array, loss_type: str = "non_saturating") -> Array:
    """The generator's GAN loss by name: "non_saturating" or "hinge"."""
    return _lookup(GENERATOR_LOSSES, loss_type)(fake_logits)


def gan_discriminator_loss(
    real_logits: Array, fake_logits: Array, loss_type: str = "non_saturating"
) -> Array:
    """The discriminator's GAN loss by name: "non_saturating" or "hinge"."""
    return _lookup(DISCRIMINATOR_LOSSES, loss_type)(real_logits, fake_logits)


def _lookup(table: dict, loss_type: str):
    if loss_type not in table:
        raise ValueError(f"unknown GAN loss {loss_type!r}; available: {', '.join(sorted(table))}")
    return table[loss_type]


# -- R1 --------------------------------------------------------------------------------------------


def r1_penalty_from_gradients(gradients: Array, gamma: float) -> Array:
    """gamma / 2 * mean over the batch of ||grad||^2 (summed over all non-batch axes)."""
    gradients = _f32(gradients).reshape(gradients.shape[0], -1)  # [B, H*W*C]
    return 0.5 * gamma * jnp.mean(jnp.sum(jnp.square(gradients), axis=-1))


def r1_penalty(
    logits_fn: Callable[[Array], Array], real_images: Array, gamma: float = 10.0
) -> tuple[Array, Array]:
    """R1 on real images: returns (gamma / 2 * E||grad_x D(x)||^2, D(x)).

    `logits_fn(images) -> logits` is the discriminator with its params bound (it must not update
    state, e.g. BatchNorm statistics). The gradient is that of sum(D(x)) w.r.t. x, as StyleGAN does;
    with a minibatch-stddev layer it includes the small cross-sample terms that layer creates. The
    logits are returned so the discriminator loss can reuse this forward pass, and the penalty is
    differentiable w.r.t. the discriminator's params (double backprop through `jax.vjp`).
    """
    logits, vjp_fn = jax.vjp(logits_fn, real_images)
    (gradients,) = vjp_fn(jnp.ones_like(logits))
    return r1_penalty_from_gradients(gradients, gamma), logits


# -- LeCam -----------------------------------------------------------------------------------------


class LeCamState(NamedTuple):
    """EMAs of the mean real and fake logits (float32 scalars) and the number of updates."""

    real_ema: Array
    fake_ema: Array
    count: Array  # int32


def lecam_init() -> LeCamState:
    zero = jnp.zeros((), jnp.float32)
    return LeCamState(real_ema=zero, fake_ema=zero, count=jnp.zeros((), jnp.int32))


def lecam_update(
    state: LeCamState, real_logits: Array, fake_logits: Array, decay: float = 0.99
) -> LeCamState:
    """Fold this batch's mean logits into the EMAs; the first update copies them (no zero bias)."""
    real_mean = jax.lax.stop_gradient(jnp.mean(_f32(real_logits)))
    fake_mean = jax.lax.stop_gradient(jnp.mean(_f32(fake_logits)))
    d = jnp.where(state.count > 0, jnp.float32(decay), jnp.float32(0.0))
    return LeCamState(
        real_ema=d * state.real_ema + (1.0 - d) * real_mean,
        fake_ema=d * state.fake_ema + (1.0 - d) * fake_mean,
        count=state.count + 1,
    )


def lecam_regularization(
    real_logits: Array, fake_logits: Array, state: LeCamState, one_sided: bool = True
) -> Array:
    """E[(D(x) - alpha_F)^2] + E[(D(G(z)) - alpha_R)^2], alpha from `state` (held constant).

    `one_sided=True` (default) is the official code: relu(D(x) - alpha_F)^2 and
    relu(alpha_R - D(G(z)))^2; `one_sided=False` is the paper's Eq. (3).
    """
    real_gap = _f32(real_logits) - jax.lax.stop_gradient(state.fake_ema)
    fake_gap = jax.lax.stop_gradient(state.real_ema) - _f32(fake_logits)
    if one_sided:
        real_gap, fake_gap = jax.nn.relu(real_gap), jax.nn.relu(fake_gap)
    return jnp.mean(jnp.square(real_gap)) + jnp.mean(jnp.square(fake_gap))


def lecam_step(
    state: LeCamState,
    real_logits: Array,
    fake_logits: Array,
    decay: float = 0.99,
    one_sided: bool = True,
) -> tuple[Array, LeCamState]:
    """Update the EMAs with this batch, then regularize against them: (penalty, new state)."""
    state = lecam_update(state, real_logits, fake_logits, decay)
    return lecam_regularization(real_logits, fake_logits, state, one_sided), state


# -- taming's adaptive weight and start step ------------------------------------------------------


def _global_norm(tree: Any) -> Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(_f32(leaf))) for leaf in leaves))


def adaptive_weight_from_grads(
    reconstruction_grads: Any,
    gan_grads: Any,
    disc_weight: float = 1.0,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Array:
    """disc_weight * clip(||g_rec|| / (||g_gan|| + eps), 0, max_weight), as a constant (float32).

    Norms are global over each pytree; taming passes only the last conv's kernel, so pass that
    (not its bias) for parity.
    """
    ratio = _global_norm(reconstruction_grads) / (_global_norm(gan_grads) + eps)
    return jax.lax.stop_gradient(jnp.clip(ratio, 0.0, max_weight) * disc_weight)


def adaptive_weight(
    loss_terms_fn: Callable[[Any], tuple[Array, Array]],
    last_layer: Any,
    disc_weight: float = 1.0,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Array:
    """taming's adaptive GAN weight, jit-safe.

    `loss_terms_fn(last_layer) -> (reconstruction_loss, gan_generator_loss)` recomputes both losses
    with the decoder's last-layer params replaced by its argument; "reconstruction" is every
    non-adversarial image term (taming: L1 + perceptual). One forward pass and two VJPs give both
    gradients.
    """
    (rec, gan), vjp_fn = jax.vjp(loss_terms_fn, last_layer)
    (rec_grads,) = vjp_fn((jnp.ones_like(rec), jnp.zeros_like(gan)))
    (gan_grads,) = vjp_fn((jnp.zeros_like(rec), jnp.ones_like(gan)))
    return adaptive_weight_from_grads(rec_grads, gan_grads, disc_weight, max_weight, eps)


def adopt_weight(weight, step, start: int, value: float = 0.0) -> Array:
    """`weight` from step `start` on, `value` before it (taming's discriminator start)."""
    return jnp.where(jnp.asarray(step) >= start, _f32(weight), jnp.float32(value))
