r"""The conv VQGAN tokenizer of MaskGIT (Chang et al. 2022).

    python -m launch.train --config=configs/vqgan.py:tiny --workdir=/tmp/vqgan_tiny
    python -m launch.train --config=configs/vqgan.py:maskgit,dataset=imagenet2012,res=256 \
        --workdir=gs://bucket/vqgan

Variants: a size (tiny, maskgit), `dataset=NAME`, `res=PIXELS`. MaskGIT defaults: channel multipliers
(1, 1, 2, 2, 4) (f16), 2 residual blocks per level, 128 filters, no attention, 1024 codes of 256-d,
commitment 0.25; perceptual 0.1, adversarial 0.1 non-saturating, R1 cost 10 (gamma 20 in our
gamma/2 convention), StyleGAN discriminator; Adam lr 1e-4 with betas (0, 0.99), batch 256.

`tiny` (CPU-sized, 32 px, 128 codes, 200 steps) turns on the codebook remedies (k-means init, EMA
decay 0.8, dead-code restart below 1 per batch): 98% eval usage, 21.4 dB (docs/quantizers.md).
"""

import ml_collections

from configs import common


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
    c.ema_decay = 0.999
    if tiny:
        common.tiny_tokenizer(c)
        c.loss.r1_gamma = 0.0
        # Codebook remedies for the CPU-sized run (see configs/vitvqgan.py and docs/quantizers.md):
        # k-means init on the first batch, a short EMA (0.8) and restarts of codes used less than
        # once per batch; without them the EMA codebook collapses within the first steps.
        c.quantizer.vq.update(dict(kmeans_init=True, decay=0.8, threshold_ema_dead_code=1.0))
    c.lock()
    return c
