r"""The conv VQGAN tokenizer of MaskGIT (Chang et al. 2022).

    python -m launch.train --config=configs/vqgan.py:tiny --workdir=/tmp/vqgan_tiny
    python -m launch.train --config=configs/vqgan.py:maskgit,dataset=imagenet2012,res=256 \
        --workdir=gs://bucket/vqgan

Variants: a size (tiny, maskgit), `dataset=NAME`, `res=PIXELS`.

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
"""

import ml_collections

from configs import common
from vqjax.models.discriminator import maskgit_widths


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, ("tiny", "maskgit"), res=0, dataset="")
    tiny = arg.size == "tiny"
    arg.res = arg.res or (32 if tiny else 256)
    c = common.common(arg)
    c.trainer = "tokenizer"
    c.dataset.name = arg.dataset or ("vqjax_photos" if tiny else "imagenet2012")

    c.model = ml_collections.ConfigDict(dict(name="vqgan", size=arg.size, embedding_dim=0))
    c.quantizer = common.quantizer_config(
        "vq", vq=dict(codebook_size=128 if tiny else 1024), lfq=dict(dim=10))
    c.loss = common.loss_config("maskgit", disc_start_step=10_000)
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-4, b1=0.0, b2=0.99, weight_decay=0.0, warmup_steps=0,
        schedule="constant", grad_clip_norm=0.0,
    ))
    c.discriminator = common.discriminator_config(lr=1e-4, b1=0.0, b2=0.99)
    if arg.size == "maskgit":
        maskgit_release(c, arg.res)
    c.ema_decay = 0.999
    if tiny:
        common.tiny_tokenizer(c)
        c.loss.r1_gamma = 0.0
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
