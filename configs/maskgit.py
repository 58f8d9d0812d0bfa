r"""MaskGIT (Chang et al. 2022) over the tokens of a trained vqjax tokenizer.

    python -m launch.train --config=configs/vitvqgan.py:tiny,dataset=vqjax_digits \
        --workdir=/tmp/tok_digits                                  # 1. a tokenizer
    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskgit_digits \
        --config.tokenizer_workdir=/tmp/tok_digits                 # 2. MaskGIT on its tokens
    python -m launch.sample --workdir=/tmp/maskgit_digits --out=/tmp/samples --labels=0,1,2

Variants: a size (tiny, S, B, L, released), `dataset=NAME` (tiny: the labelled built-in `vqjax_digits`),
`res=PIXELS` (0: the tokenizer's training resolution). `--config.tokenizer_workdir` is required:
the tokenizer (config, EMA params, quantizer state) is restored from its latest checkpoint, or
`--config.tokenizer_step`, and the run stays pinned to that checkpoint; the MaskGIT is sized for
its quantizer (`maskgit.for_quantizer`). Tokens are encoded on the fly inside
the step, or read from a pre-encoded dataset (what large runs use):

    python -m launch.encode_tokens --tokenizer_workdir=/tmp/tok_digits --out=/tmp/tokens_digits
    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskgit_digits \
        --config.tokenizer_workdir=/tmp/tok_digits --config.tokens_dir=/tmp/tokens_digits

The S/B/L presets follow google-research/maskgit's released `configs/maskgit_class_cond_config.py`
(on `configs/base_config.py`); B is its transformer (24 layers, width 768, 16 heads, MLP 3072,
dropout 0.1), and every field below has the release's value:
- masking: cosine schedule, min_masking_rate 0.5 (the ratio drawn from the schedule is raised to
  at least 0.5), loss on the masked tokens only (compute_loss_for_all=False), label smoothing 0.1
  (MaskGIT's on = 1 - 0.1 + 0.1/K, off = 0.1/K), no class dropout;
- optimizer: AdamW lr 1e-4, b1 0.9, b2 0.96, weight decay 0.045, 5,000 warm-up steps, then
  base_config's "constant" schedule (the class-conditional config does not override it), no
  gradient clipping;
- batch 256, 2,000,000 steps, checkpoint and eval every 10,000 steps, EMA (polyak) 0.999;
- sampling: cosine schedule, choice temperature 4.5 (annealed by 1 - step/steps), token
  temperature 1, no guidance.

Deliberate differences, with reasons:
- crops: the release ships no input pipeline; we center-crop with random flips, and do not
  random-resize-crop down to 8% of the area (what `configs/common.py` does for tokenizers), which
  would teach the class-conditional model zoomed-in parts of objects;
- sampling steps: 8, the paper's setting for its ImageNet 256 results; the released
  `inference.py` defaults to 16 (`sample_num_iterations` is commented out in the config);
- the masked cross-entropy averages over all masked tokens of the batch
  (`vqjax.models.maskgit.masked_cross_entropy`); the release averages within each image, then
  over images, which weighs the tokens of lightly masked images more;
- `tiny` (CPU demo on `vqjax_digits`, lr 1e-3 for 500 steps) keeps class dropout 0.1, so that
  `launch.sample --guidance_scale` has a trained unconditional token to guide with (the release
  has no classifier-free guidance), and a cosine-decayed, clipped learning rate.

Paper defaults: cosine mask schedule, label smoothing 0.1, AdamW lr 1e-4 (b1 0.9, b2 0.96, weight
decay 0.045), class dropout 0.1 (classifier-free guidance at sampling time), 8 decoding steps with
choice temperature 4.5.

`released` (with `res=256` or `res=512`) is MaskGIT's released ImageNet transformer
(maskgit_class_cond_config.py): the BERT architecture (`maskgit.create("released")`, 24 layers of
768, 16 heads, MLP 3072, dropout 0.1), 1000 classes, min mask rate 0.5, no class dropout (the
released model has no classifier-free guidance), and its decoding settings: cosine schedule,
choice temperature 4.5, 8 steps at 256 px and 12 at 512 px (the paper's). `launch.convert
--from=maskgit` writes runs with this config (docs/pretrained.md); fine-tune one with

    python -m launch.train --config=configs/maskgit.py:released,res=256 \
        --workdir=converted/maskgit256/maskgit \
        --config.tokenizer_workdir=converted/maskgit256/tokenizer

Bits mode (MaskBit, for lfq/bsq tokenizers; `maskgit.for_quantizer` picks it above 2^16 codes, or
`--config.model.prediction=bits`): each index's b bits are split into `model.codebook_splits`
groups (0: 2, MaskBit's choice; must divide b), each predicted by a 2^(b/splits)-way softmax,
masked (training, with `masking.schedule`) and decoded (sampling) on its own; the loss and the eval
NLL/accuracy are per masked group. MaskBit's released generators also use `masking.schedule` and
`sample.schedule` "arccos", guidance `sample.guidance_base="cond"` (cond + s (cond - uncond)) with
s 5.7-7.1 annealed by `sample.guidance_anneal="cosine<p>"` (p 2.5-3), 64 decoding steps and choice
temperature 7.8-10.5 (14 bits: s 7.1, cosine3, 7.8); this config keeps MaskGIT's values unless
overridden:

    python -m launch.train --config=configs/maskgit.py:tiny --workdir=/tmp/maskbit_digits \
        --config.tokenizer_workdir=/tmp/tok_lfq --config.model.prediction=bits \
        --config.model.codebook_splits=2 --config.masking.schedule=arccos
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.parse_arg(arg, ("tiny", "S", "B", "L", "released"), res=0, dataset="")
    released = arg.size == "released"
    tiny = arg.size == "tiny"
    c = common.common(arg)  # dataset.image_size = res; 0: the tokenizer's resolution
    c.trainer = "maskgit"
    c.tokenizer_workdir = ""  # required: a tokenizer run's workdir (with a checkpoint)
    # The tokenizer checkpoint this run uses, pinned at its start: -1 takes the tokenizer's latest
    # and records its step here (saved with every checkpoint); resume, sampling and evaluation
    # restore exactly that step and check the fingerprint (a hash of its config and variables,
    # filled in automatically), refusing a checkpoint that is gone or differs. The tokenizer run
    # keeps a pinned checkpoint past keep_checkpoints (a marker in <tokenizer_workdir>/pins/).
    c.tokenizer_step = -1
    c.tokenizer_fingerprint = ""
    c.tokens_dir = ""  # "": encode images on the fly; else a launch.encode_tokens dataset
    c.ema_decay = 0.999  # EMA of the params, used to sample and evaluate (0: the raw params)
    c.dataset.name = arg.dataset or ("vqjax_digits" if tiny else "imagenet2012")
    c.dataset.crop = "center"  # the release does not random-resize-crop (docstring)
    c.dataset.crop_area_min = 0.08  # used only with crop="random_resized"
    c.total_steps = 2_000_000
    c.checkpoint_every_steps = 10_000

    c.model = ml_collections.ConfigDict(dict(
        size=arg.size,
        num_classes=placeholder(int),  # unset: from the dataset's labels; 0: unconditional
        prediction="",  # "": maskgit.for_quantizer decides ("index", or "bits" for huge lfq/bsq)
        codebook_splits=0,  # bits mode: bit groups per index (0: 2, MaskBit's; must divide bits)
        posemb="learned", tie_head=True, dropout=-1.0,  # -1: the size preset's dropout
    ))
    c.masking = ml_collections.ConfigDict(dict(
        schedule="cosine", min_mask_rate=0.5, label_smoothing=0.1, class_dropout=0.0,
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adam", lr=1e-4, b1=0.9, b2=0.96, weight_decay=0.045, warmup_steps=5_000,
        schedule="constant", grad_clip_norm=0.0,
    ))
    c.sample = ml_collections.ConfigDict(dict(
        num_steps=8, temperature=1.0, choice_temperature=4.5, guidance_scale=0.0, top_k=0,
        top_p=0.0, schedule="cosine", per_class=2,  # per_class: images per label in the grids
        guidance_base="uncond",  # uncond + s (cond - uncond); "cond": MaskBit's cond + s (...)
        guidance_anneal="none",  # "linear", or "cosine<p>" (MaskBit's power-cosine, e.g. cosine3)
    ))
    c.compute_dtype = "bfloat16"
    # Eval: masked-token NLL and accuracy on eval_examples of the eval split (fixed masks).
    c.eval_every_steps = 10_000
    c.eval_examples = 10_000
    if released:
        c.model.size = "B"
        c.model.architecture = "bert"
        c.model.num_classes = 1000
        c.model.dropout = 0.1
        c.masking.min_mask_rate = 0.5
        c.masking.class_dropout = 0.0
        c.sample.num_steps = 12 if arg.res == 512 else 8
        c.compute_dtype = "float32"
    if tiny:
        c.batch_size = 32
        c.total_steps = 500
        c.log_every_steps = 10
        c.checkpoint_every_steps = 100
        c.image_every_steps = 100
        c.eval_every_steps = 100
        c.eval_examples = 128
        c.ema_decay = 0.99
        c.compute_dtype = "float32"
        c.optimizer.lr = 1e-3
        c.optimizer.warmup_steps = 20
        c.dataset.flip = False  # digits are not mirror-symmetric
        c.masking.class_dropout = 0.1  # a trained null class for guided sampling (docstring)
        c.optimizer.schedule = "cosine"  # the 500-step demo at lr 1e-3: decayed and clipped
        c.optimizer.grad_clip_norm = 1.0
    c.lock()
    return c
