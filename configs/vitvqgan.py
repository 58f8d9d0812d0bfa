r"""ViT-VQGAN tokenizer (Yu et al. 2021): ViT encoder/decoder, factorized l2-normalized codes.

    python -m launch.train --config=configs/vitvqgan.py:tiny --workdir=/tmp/vitvqgan_tiny
    python -m launch.train --config=configs/vitvqgan.py:B,dataset=imagenet2012,res=256 \
        --workdir=gs://bucket/vitvqgan_b --config.quantizer.name=fsq

Variants: a size (tiny, S, B, L), `dataset=NAME` (any tfds name; tiny defaults to the built-in
photographs), `res=PIXELS`. Paper defaults: 8x8 patches, 8192 codes of 32-d (l2-normalized),
L2 1.0, perceptual 0.1, adversarial 0.1 (StyleGAN discriminator), Adam lr 1e-4 (b1 0.9, b2 0.99).

`tiny` (the README's main job, ~4 minutes on 2 CPU cores) differs on purpose: 32 px, patch 4,
256 codes of 8-d, lr 1e-3, 400 steps, no perceptual loss, and the codebook remedies (k-means init,
EMA decay 0.8, dead-code restart below 1 per batch, rotation trick) that keep >= 90% of the codes
in use at this scale (94%, 22.5 dB eval PSNR; docs/quantizers.md).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, ("tiny", "S", "B", "L"), res=0, dataset="")
    tiny = arg.size == "tiny"
    arg.res = arg.res or (32 if tiny else 256)
    c = common.common(arg)
    c.trainer = "tokenizer"
    c.dataset.name = arg.dataset or ("vqjax_photos" if tiny else "imagenet2012")

    c.model = ml_collections.ConfigDict(dict(
        name="vit_vqgan", size=arg.size, patch_size=4 if tiny else 8, posemb="learned",
        mlp_type="mlp", dropout=0.0,
        latent_dim=placeholder(int),  # unset: derived from the quantizer
    ))
    c.quantizer = common.quantizer_config(
        "vq", vq=dict(codebook_size=512 if tiny else 8192, codebook_dim=8 if tiny else 32,
                      use_cosine_sim=True))
    c.loss = common.loss_preset("vit_vqgan", disc_start_step=20_000)
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-4, b1=0.9, b2=0.99, weight_decay=1e-4, warmup_steps=5_000,
        schedule="cosine", grad_clip_norm=1.0,
    ))
    c.discriminator = common.discriminator_config(lr=1e-4, b1=0.9, b2=0.99)
    c.ema_decay = 0.999
    if tiny:
        common.tiny_tokenizer(c)
        c.optimizer.warmup_steps = 20
        c.total_steps = 400  # ~4 minutes on 2 idle CPU cores, compilation included
        c.checkpoint_every_steps = 200
        c.eval_every_steps = 200
        c.image_every_steps = 200
        # Codebook remedies (off in the paper-sized presets, which keep the paper's recipe): the
        # tiny encoder's latents start nearly one-dimensional (photographs' 4x4 patches are mostly
        # their mean colour) and move fast at lr 1e-3, so a plain EMA codebook keeps ~13 of its 512
        # codes. k-means init puts the codes on the first batch; a short EMA (decay 0.8, as
        # vector-quantize-pytorch) lets codes follow the moving encoder; codes whose EMA count
        # falls below 1 per batch restart on random latents of the batch; the rotation trick
        # (Fifty et al. 2024) passes angle and norm to the encoder. See docs/quantizers.md.
        c.quantizer.vq.update(dict(kmeans_init=True, decay=0.8, threshold_ema_dead_code=1.0,
                                   rotation_trick=True))
        # Evaluation pairs the EMA params with the live codebook. An EMA over the last ~45 steps
        # (0.999 capped by its warm-up at step 400) encodes with an encoder the codebook no longer
        # follows: measured eval usage 77% (EMA params) vs 88% (live params). Over a 400-step run
        # a short EMA (~10 steps) keeps the pair consistent.
        c.ema_decay = 0.9
        # 256 codes: restarts below 1 use per batch need a few tokens per code in a batch (1,024
        # tokens here); with 512 codes eval usage reached 86% (PSNR 22.7 dB), with 256 94%
        # (22.5 dB) at 400 steps. docs/quantizers.md has the numbers.
        c.quantizer.vq.codebook_size = 256
    c.lock()
    return c
