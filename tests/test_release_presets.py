"""`configs/vqgan.py:maskgit` and `configs/maskgit.py` against google-research/maskgit's released
configs (values copied from `configs/vqgan_config.py`, `configs/base_config.py` and
`configs/maskgit_class_cond_config.py`; their names in the comments)."""

from configs import maskgit as maskgit_config
from configs import vqgan as vqgan_config
from configs.common import quantizer_options
from vqjax import quantizers
from vqjax.train.tokenizer import build_discriminator


def test_vqgan_maskgit_preset_equals_the_release():
    c = vqgan_config.get_config("maskgit")
    name, options = quantizer_options(c.quantizer)
    q = quantizers.build(name, **options)
    assert name == "vq" and q.codebook_size == 1024  # vqvae.quantizer, codebook_size
    assert q.ema_update is False and q.codebook_weight == 1.0  # q_latent_loss, learned codebook
    assert q.commitment_weight == 0.25  # vqvae.commitment_cost
    assert (q.entropy_loss_weight, q.entropy_temperature) == (0.1, 0.01)  # entropy_loss_ratio/_temp
    assert not q.use_cosine_sim and not q.kmeans_init and q.threshold_ema_dead_code == 0
    assert (c.model.size, c.dataset.image_size, c.batch_size) == ("maskgit", 256, 256)
    assert (c.total_steps, c.eval_every_steps, c.ema_decay) == (1_000_000, 10_000, 0.999)
    # optimizer.beta1/beta2, g_lr, d_lr; base_config's constant schedule and warm-up
    assert (c.optimizer.lr, c.optimizer.b1, c.optimizer.b2) == (1e-4, 0.0, 0.99)
    assert (c.optimizer.schedule, c.optimizer.warmup_steps) == ("constant", 2_000)
    assert (c.optimizer.weight_decay, c.optimizer.grad_clip_norm) == (0.0, 0.0)
    assert (c.discriminator.lr, c.discriminator.b1, c.discriminator.b2) == (1e-4, 0.0, 0.99)
    # perceptual_loss_weight, g_adversarial_loss_weight, non-saturating, r1 cost 10
    assert (c.loss.l2_weight, c.loss.perceptual_weight, c.loss.adversarial_weight) == (1, 0.1, 0.1)
    assert c.loss.gan_loss == "non_saturating" and c.loss.r1_gamma == 20.0
    assert c.loss.disc_start_step == 0
    disc = build_discriminator(c)
    assert (disc.filters, disc.channel_multipliers, disc.mbstd_group_size) == (
        64, (2, 4, 8, 8, 8, 8), 0)


def test_maskgit_class_cond_preset_equals_the_release():
    c = maskgit_config.get_config("B")
    assert (c.masking.schedule, c.masking.min_mask_rate) == ("cosine", 0.5)
    assert (c.masking.label_smoothing, c.masking.class_dropout) == (0.1, 0.0)
    o = c.optimizer
    assert (o.lr, o.b1, o.b2, o.weight_decay, o.warmup_steps) == (1e-4, 0.9, 0.96, 0.045, 5_000)
    assert (o.schedule, o.grad_clip_norm) == ("constant", 0.0)
    assert (c.batch_size, c.total_steps, c.ema_decay) == (256, 2_000_000, 0.999)
    assert (c.eval_every_steps, c.checkpoint_every_steps) == (10_000, 10_000)
    assert c.sample.choice_temperature == 4.5 and c.sample.temperature == 1.0
    assert c.sample.schedule == "cosine" and c.sample.guidance_scale == 0.0
    assert c.dataset.crop == "center" and c.dataset.flip
    assert c.model.size == "B" and c.model.dropout == -1.0  # B's preset dropout 0.1
