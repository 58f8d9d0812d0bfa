r"""The conv VQGAN tokenizer of MaskGIT (Chang et al. 2022).

    python -m launch.train --config=configs/vqgan.py:tiny --workdir=/tmp/vqgan_tiny
    python -m launch.train --config=configs/vqgan.py:maskgit,dataset=imagenet2012,res=256 \
        --workdir=gs://bucket/vqgan

Variants: a size (tiny, maskgit, maskgit_released), `dataset=NAME`, `res=PIXELS`. MaskGIT defaults: channel multipliers
(1, 1, 2, 2, 4) (f16), 2 residual blocks per level, 128 filters, no attention, 1024 codes of 256-d,
commitment 0.25; perceptual 0.1, adversarial 0.1 non-saturating, R1 cost 10 (gamma 20 in our
gamma/2 convention), StyleGAN discriminator; Adam lr 1e-4 with betas (0, 0.99), batch 256.

`maskgit_released` is the network of MaskGIT's released ImageNet tokenizers (256 and 512 px), what
`python -m launch.convert --from=maskgit` writes (see docs/pretrained.md), so a converted
tokenizer fine-tunes with

    python -m launch.train --config=configs/vqgan.py:maskgit_released,res=256 \
        --workdir=converted/maskgit256/tokenizer

It differs from `maskgit` in the released code's ResBlock shortcut (a 1x1 conv of the residual
branch's output), its [0, 1] pixel range inside the network, a gradient-trained codebook
(`ema_update=False`: the released VQ learns its codebook by the codebook loss) and float32
compute. Known differences from the released training setup: the released VQ also adds an entropy
loss (weight 0.1, temperature 0.01) that vqjax's vq quantizer does not have here, and MaskGIT's
perceptual loss uses a ResNet-50 "pretrained_image_model" while ours is LPIPS/VGG16.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, ("tiny", "maskgit", "maskgit_released"), res=0, dataset="")
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
    c.ema_decay = 0.999
    if arg.size == "maskgit_released":
        c.quantizer.vq.ema_update = False  # the released codebook is a param (codebook loss)
        c.compute_dtype = "float32"
    if tiny:
        common.tiny_tokenizer(c)
        c.loss.r1_gamma = 0.0
    c.lock()
    return c
