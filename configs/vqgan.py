r"""The conv VQGAN tokenizer of MaskGIT (Chang et al. 2022).

    python -m launch.train --config=configs/vqgan.py:tiny --workdir=/tmp/vqgan_tiny
    python -m launch.train --config=configs/vqgan.py:maskgit,dataset=imagenet2012,res=256 \
        --workdir=gs://bucket/vqgan

Variants: a size (tiny, maskgit, maskgit_released, taming_*, llamagen_vq16), `dataset=NAME`, `res=PIXELS`.

`maskgit` is google-research/maskgit's released tokenizer recipe: `configs/vqgan_config.py` (on
`configs/base_config.py`), `nets/vqgan_tokenizer.py`, `nets/discriminator.py`, `libml/losses.py`:
- model: 128 filters, channel multipliers (1, 1, 2, 2, 4) (f16), 2 residual blocks per level,
  GroupNorm + swish, no attention, average-pool downsampling (`conv_downsample=False`), 256-d
  latents;
- quantizer: `vq` with 1024 codes learned by gradient (`ema_update=False`): q_latent_loss (weight 1)
  + 0.25 x e_latent_loss, plus MaskGIT's entropy loss, weight 0.1 at temperature 0.01 (softmax
  type: per-latent entropy minus the entropy of the batch average, over -squared distances);
  codebook init variance_scaling(1, fan_in, uniform), euclidean nearest code;
- losses: L2 1.0, perceptual 0.1, adversarial 0.1 non-saturating, R1 cost 10 (r1_gamma 20 in our
  gamma/2 convention), no discriminator start step (the release defines none);
- discriminator: the release's StyleGAN discriminator (`discriminator.maskgit_widths`: 64 -> 128,
  256, 512, 512, 512, 512 channels at 256 px, blur-pool resampling, ending at 4x4, no
  minibatch-stddev), one D step per G step;
- optimizers: Adam b1 0, b2 0.99, lr 1e-4 for G and D, base_config's "constant" schedule with its
  2,000 warm-up steps, no weight decay, no clipping; EMA (polyak) 0.999 of the generator params;
- data: ImageNet at 256 px, batch 256, 1,000,000 steps, eval every 10,000 steps.

Deliberate differences, with reasons:
- the entropy loss's batch average is over the global batch (every device's latents) instead of
  each replica's own batch (the release's `entropy_loss` has no cross-replica mean): our statistics
  are sharding-independent, so 1 and 8 devices train alike;
- perceptual loss: LPIPS-VGG16; the release's perceptual network (`pretrained_image_model=True`)
  is not released;
- input pipeline: the release ships none; we keep `configs/common.py`'s random-resized crop and
  flip;
- the warm-up: base_config defines `lr_warmup_steps=2000` for its constant schedule but the trainer
  that reads it is not released, so whether it applies to the VQGAN trainer cannot be checked;
- `eval_exact_match`, `eval_num=50,000` (FID settings) and the Gumbel `tau_anneal` block have no
  counterpart here (FID is `launch.evaluate`'s job; the quantizer is `vq`, not `gumbel`).

Shared defaults: channel multipliers
(1, 1, 2, 2, 4) (f16), 2 residual blocks per level, 128 filters, no attention, 1024 codes of 256-d,
commitment 0.25; perceptual 0.1, adversarial 0.1 non-saturating, R1 cost 10 (gamma 20 in our
gamma/2 convention), StyleGAN discriminator; Adam lr 1e-4 with betas (0, 0.99), batch 256.

`tiny` (CPU-sized, 32 px, 128 codes, 200 steps) turns on the codebook remedies (k-means init, EMA
decay 0.8, dead-code restart below 0.75 uses per batch, parameter EMA 0.9): 96.9% eval usage,
21.6 dB.

`maskgit_released` is the network of MaskGIT's released ImageNet tokenizers (256 and 512 px), what
`python -m launch.convert --from=maskgit` writes (see docs/pretrained.md), so a converted
tokenizer fine-tunes with

    python -m launch.train --config=configs/vqgan.py:maskgit_released,res=256 \
        --workdir=converted/maskgit256/tokenizer

It differs from `maskgit` in the released code's ResBlock shortcut (a 1x1 conv of the residual
branch's output), its [0, 1] pixel range inside the network and float32 compute; its training
recipe is `maskgit`'s (gradient codebook with the entropy loss, the released discriminator).
MaskGIT's perceptual loss uses a ResNet-50 "pretrained_image_model" while ours is LPIPS/VGG16.

Released conv tokenizers (model `taming_vqgan`, the targets of vqjax.convert.taming/llamagen):
`taming_f16_1024`, `taming_f16_16384`, `llamagen_vq16`, and the CPU-sized `taming_tiny`
(`taming_config` below lists how each follows its recipe):

    python -m launch.train --config=configs/vqgan.py:taming_tiny --workdir=/tmp/taming_tiny
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common
from vqjax.models.discriminator import maskgit_widths


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, ("tiny", "maskgit", "maskgit_released") + TAMING_VARIANTS,
                           res=0, dataset="")
    if arg.size in TAMING_VARIANTS:
        return taming_config(arg)
    tiny = arg.size == "tiny"
    arg.res = arg.res or (32 if tiny else 256)
    c = common.common(arg)
    c.trainer = "tokenizer"
    c.dataset.name = arg.dataset or ("vqjax_photos" if tiny else "imagenet2012")

    c.model = ml_collections.ConfigDict(dict(
        name="vqgan", size=arg.size,
        embedding_dim=placeholder(int),  # unset: the size preset's (or the quantizer's)
    ))
    c.quantizer = common.quantizer_config(
        "vq", vq=dict(codebook_size=128 if tiny else 1024), lfq=dict(dim=10))
    c.loss = common.loss_preset("maskgit", disc_start_step=10_000)
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-4, b1=0.0, b2=0.99, weight_decay=0.0, warmup_steps=0,
        schedule="constant", grad_clip_norm=0.0,
    ))
    c.discriminator = common.discriminator_config(lr=1e-4, b1=0.0, b2=0.99)
    if arg.size in ("maskgit", "maskgit_released"):
        maskgit_release(c, arg.res)  # gradient codebook + entropy loss, released discriminator
    c.ema_decay = 0.999
    if arg.size == "maskgit_released":
        c.compute_dtype = "float32"
    if tiny:
        common.tiny_tokenizer(c)
        c.loss.r1_gamma = 0.0
        # Codebook remedies for the CPU-sized run (see configs/vitvqgan.py and docs/quantizers.md):
        # k-means init on the first batch, a short EMA (0.8) and restarts of codes used less than
        # 0.75 times per batch; without them the EMA codebook collapses within the first steps.
        # Threshold 1 gave 89.8% / 94.5% eval usage (seeds 0 / 1) after the discriminator's
        # blur-pool became strided slices (same values to 2.4e-7, a different trajectory), 0.75
        # gives 96.9% at both seeds and 21.6 dB (8 CPU devices, as the tests run it).
        c.quantizer.vq.update(dict(kmeans_init=True, decay=0.8, threshold_ema_dead_code=0.75))
        # Evaluation pairs the EMA params with the EMA of the quantizer state: over 200 steps a
        # long EMA (0.999, capped by its warm-up) lags the moving codebook (eval usage 89.8%
        # measured); a short one (~10 steps) stays consistent, as in configs/vitvqgan.py:tiny.
        c.ema_decay = 0.9
    c.lock()
    return c


def maskgit_release(c: ml_collections.ConfigDict, res: int) -> None:
    """The fields where the released recipe (module docstring) differs from the shared defaults."""
    c.quantizer.vq.update(dict(codebook_size=1024, ema_update=False, commitment_weight=0.25,
                               entropy_loss_weight=0.1, entropy_temperature=0.01))
    c.loss.disc_start_step = 0  # the release defines no discriminator start step
    c.optimizer.warmup_steps = 2_000  # base_config's lr_warmup_steps for its constant schedule
    filters, multipliers = maskgit_widths(res)
    c.discriminator.update(dict(filters=filters, channel_multipliers=multipliers,
                                mbstd_group_size=0))
    c.total_steps = 1_000_000
    c.eval_every_steps = 10_000


# ------------------------------------------------------------------------------------------------
# taming-transformers' VQGAN and LlamaGen's VQ (vqjax/models/taming_vqgan.py)
# ------------------------------------------------------------------------------------------------
TAMING_VARIANTS = ("taming_f16_1024", "taming_f16_16384", "llamagen_vq16", "taming_tiny")


def taming_config(arg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The released taming / LlamaGen tokenizers (the targets of vqjax.convert.taming/llamagen).

    Networks and quantizers as released (taming configs/imagenet_vqgan.yaml: ch 128, ch_mult
    (1, 1, 2, 2, 4), 2 res blocks, attention at 16x16, z 256, 256-d codes, VectorQuantizer2 with
    beta 0.25 `legacy`; LlamaGen VQ-16: the same network, 8-d l2-normalised codes, 16384 of them).
    Training follows each recipe where the tokenizer trainer can; the differences and why:
    - taming: L1 + LPIPS 1.0 + hinge GAN 0.8 from step 250001 with a 3-layer PatchGAN, Adam
      betas (0.5, 0.9), lr = 4.5e-6 x batch size (taming's scaling rule). Differences: the trainer
      has no adaptive (grad-norm ratio) GAN weight, so 0.8 is a fixed weight; the PatchGAN uses
      GroupNorm (taming: BatchNorm) since the trainer keeps no batch statistics.
    - LlamaGen: L2 + LPIPS 1.0 + hinge GAN 0.5 from step 20000, PatchGAN, AdamW lr 1e-4 betas
      (0.9, 0.95) decoupled weight decay 0.05 ("adam" here is optax.adamw), grad clip 1.0,
      batch 128. Differences: as for taming (fixed GAN weight, GroupNorm PatchGAN); LlamaGen
      trains in bf16 autocast, these run in float32.
    - compute_dtype float32, and converted configs set model.precision="highest" (float32 convs
      on GPUs/TPUs too), since they reproduce the released outputs to 1e-4; for training,
      `--config.model.precision=` (JAX's default) is faster on accelerators.
    - `taming_tiny` is a CPU-sized network (f4, 32 -> 64 channels, attention at 8x8) for tests.
    """
    llamagen = arg.size == "llamagen_vq16"
    tiny = arg.size == "taming_tiny"
    arg.res = arg.res or (32 if tiny else 256)
    c = common.common(arg)
    c.trainer = "tokenizer"
    c.dataset.name = arg.dataset or ("vqjax_photos" if tiny else "imagenet2012")
    c.compute_dtype = "float32"

    c.model = ml_collections.ConfigDict(dict(
        name="taming_vqgan", size=arg.size, filters=128, channel_multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=2, attention_levels=(4,), z_channels=256,
        embedding_dim=8 if llamagen else 256, dropout=0.0,
        precision="",  # "": JAX's default (TF32 / bf16 passes on accelerators); "highest": exact
    ))
    codebook_size = {"taming_f16_1024": 1024, "taming_tiny": 128}.get(arg.size, 16384)
    c.quantizer = common.quantizer_config("vq", vq=dict(
        codebook_size=codebook_size, commitment_weight=0.25 if llamagen else 1.0,
        use_cosine_sim=llamagen))
    # A gradient-trained codebook with taming's/LlamaGen's loss weights (see taming_vqgan.py).
    c.quantizer.vq.ema_update = False
    c.quantizer.vq.codebook_weight = 1.0 if llamagen else 0.25

    if llamagen:
        c.batch_size = 128
        c.loss = common.loss_preset(
            "maskgit", l2_weight=1.0, perceptual_weight=1.0, adversarial_weight=0.5,
            gan_loss="hinge", r1_gamma=0.0, disc_start_step=20_000)
        c.optimizer = ml_collections.ConfigDict(dict(
            name="adam", lr=1e-4, b1=0.9, b2=0.95, weight_decay=0.05, warmup_steps=0,
            schedule="constant", grad_clip_norm=1.0,
        ))
        c.discriminator = common.discriminator_config(
            name="patchgan", filters=64, num_layers=3, lr=1e-4, b1=0.9, b2=0.95)
    else:
        c.loss = common.loss_preset(
            "maskgit", l2_weight=0.0, l1_weight=1.0, perceptual_weight=1.0,
            adversarial_weight=0.8, gan_loss="hinge", r1_gamma=0.0, disc_start_step=250_001)
        lr = 4.5e-6 * c.batch_size
        c.optimizer = ml_collections.ConfigDict(dict(
            name="adam", lr=lr, b1=0.5, b2=0.9, weight_decay=0.0, warmup_steps=0,
            schedule="constant", grad_clip_norm=0.0,
        ))
        c.discriminator = common.discriminator_config(
            name="patchgan", filters=64, num_layers=3, lr=lr, b1=0.5, b2=0.9)
    c.ema_decay = 0.999
    if tiny:
        c.model.update(dict(filters=32, channel_multipliers=(1, 1, 2), num_res_blocks=1,
                            attention_levels=(2,), z_channels=64, embedding_dim=64))
        common.tiny_tokenizer(c)
        c.loss.disc_start_step = 100
    c.lock()
    return c
