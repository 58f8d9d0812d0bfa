"""Pieces shared by every trainer config: argument parsing and the common fields.

`get_config(arg)` takes a comma-separated list of variants, e.g. "S,dataset=imagenet2012,res=256":
a bare word picks a model size, `key=value` pairs set options. Every config is locked, so a
mistyped `--config.optimizer.lrr=1` is an error naming the field instead of a silent no-op.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from vqjax.train.config import quantizer_options  # noqa: F401 (re-exported for configs)


def parse_arg(arg: str | None, sizes: tuple[str, ...], **defaults) -> ml_collections.ConfigDict:
    """"S,res=256" -> {size: "S", res: 256, ...defaults}; values are cast to the default's type."""
    out = dict(defaults)
    out.setdefault("size", sizes[0])
    for part in filter(None, (arg or "").split(",")):
        if "=" not in part:
            if part not in sizes:
                raise ValueError(f"unknown config variant {part!r}; sizes: {', '.join(sizes)}")
            out["size"] = part
            continue
        key, value = part.split("=", 1)
        if key not in out:
            raise ValueError(f"unknown config argument {key!r}; known: {', '.join(sorted(out))}")
        default = out[key]
        if isinstance(default, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif default is not None and not isinstance(default, str):
            out[key] = type(default)(value)
        else:
            out[key] = value
    return ml_collections.ConfigDict(out)


def quantizer_config(name: str, **per_quantizer) -> ml_collections.ConfigDict:
    """`quantizer.name` picks one of the option blocks below it, so switching quantizers is one
    override (`--config.quantizer.name=fsq`) and every quantizer's options stay overridable."""
    blocks = {
        "vq": dict(codebook_size=1024, commitment_weight=0.25, decay=0.99, kmeans_init=False,
                   threshold_ema_dead_code=0.0, rotation_trick=False, use_cosine_sim=False,
                   codebook_dim=0, ema_update=True, restart="random", anchor="random",
                   entropy_loss_weight=0.0, entropy_temperature=0.01,
                   codebook_diversity_loss_weight=0.0, codebook_diversity_temperature=100.0),
        "fsq": dict(levels=(8, 5, 5, 5)),
        "lfq": dict(dim=10, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                    inv_temperature=100.0),
        # bsq-vit (the BSQ reference): beta (commitment) 0 and codebook weight 0.1. A commitment
        # term pulls u to the corner it sits in and locks in a collapse (docs/quantizers.md).
        "bsq": dict(dim=10, entropy_loss_weight=0.1, commitment_loss_weight=0.0,
                    inv_temperature=1.0),
        # codebook_bias=False: the linear map of runs trained before the bias existed.
        "simvq": dict(codebook_size=1024, commitment_weight=0.25, rotation_trick=False,
                      codebook_bias=True),
        "rvq": dict(num_quantizers=4, codebook_size=1024, shared_codebook=False,
                    quantize_dropout=False),
    }
    for key, values in per_quantizer.items():
        blocks[key].update(values)
    return ml_collections.ConfigDict({"name": name, **blocks})


def loss_preset(preset: str, **overrides) -> ml_collections.ConfigDict:
    """The config.loss block: the fields of `vqjax.losses.total.LossConfig` from one of its
    presets (`vqjax.losses.loss_config(preset)`), with `preset` recorded."""
    from vqjax.losses.total import loss_config as preset_config

    fields = dataclasses.asdict(preset_config(preset, **overrides))
    return ml_collections.ConfigDict({"preset": preset, **fields})


def discriminator_config(**overrides) -> ml_collections.ConfigDict:
    """StyleGAN (default, as ViT-VQGAN and MaskGIT) or PatchGAN (taming) discriminator."""
    fields = dict(name="stylegan", filters=128, channel_multipliers=(2, 4, 4, 4, 4),
                  mbstd_group_size=4,  # StyleGAN's minibatch-stddev group; 0: none (MaskGIT)
                  num_layers=3, lr=1e-4, b1=0.0, b2=0.99)
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


def common(arg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Fields named alike in every trainer config."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 256  # global, over all processes and devices
    c.total_steps = 500_000
    c.log_every_steps = 100
    c.checkpoint_every_steps = 5_000
    c.keep_checkpoints = 3
    c.eval_every_steps = 10_000
    c.eval_examples = 1_000
    c.image_every_steps = 5_000
    c.grad_accum_steps = 1
    c.compute_dtype = "bfloat16"
    c.nonfinite = "skip"  # "skip": drop the update and count it; "error": stop with a clear error
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, fsdp_min_size=2**18, num_devices=0))
    c.dataset = ml_collections.ConfigDict(dict(
        name="imagenet2012", data_dir="", train_split="train", eval_split="validation",
        image_size=arg.res, crop="random_resized", crop_area_min=0.08, flip=True, num_workers=0,
    ))
    return c


def tiny_tokenizer(c: ml_collections.ConfigDict) -> None:
    """The CPU-sized settings every `tiny` tokenizer config shares (minutes on 2 cores)."""
    c.batch_size = 16
    c.total_steps = 200
    c.log_every_steps = 10
    c.checkpoint_every_steps = 100
    c.eval_every_steps = 100
    # Evaluate over the whole eval split (it has 110 images for vqjax_photos; an eval stream ends
    # where its split does): codebook usage counts the codes used at least once, so it is only
    # comparable between runs over the same, complete split.
    c.eval_examples = 1_000
    c.image_every_steps = 100
    c.compute_dtype = "float32"
    c.optimizer.lr = 1e-3
    c.loss.perceptual_weight = 0.0  # VGG16 dominates a tiny CPU step; opt in with 0.1
    c.loss.disc_start_step = 100
    c.discriminator.filters = 16
    c.discriminator.channel_multipliers = (1, 2, 2)
    c.dataset.crop_area_min = 0.35
