"""taming_vqgan + vqjax.convert.taming against taming-transformers' own modules.

The reference is assembled from the `taming-transformers-rom1504` package as
`taming.models.vqgan.VQModel` builds it (Encoder, Decoder, VectorQuantizer2, quant_conv,
post_quant_conv; no Lightning), at a small width with random weights, saved as a Lightning-style
.ckpt, converted, and run on the same images: the indices must be identical and the reconstructions
within 1e-4.
"""

from __future__ import annotations

import argparse
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import vqgan as vqgan_configs
from vqjax.convert import taming as taming_convert
from vqjax.convert.torch_checkpoint import CheckpointError
from vqjax.models import taming_vqgan
from vqjax.train.tokenizer import build_tokenizer

REASON = ("the taming reference needs `pip install --no-deps taming-transformers-rom1504==0.0.6 "
          "torch==2.13.0` (see the Makefile's setup)")

# 32 px -> levels at 32, 16, 8 (f4); attention at 8x8 as taming's attn_resolutions=[16] at f16.
DDCONFIG = dict(double_z=False, z_channels=32, resolution=32, in_channels=3, out_ch=3, ch=32,
                ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=[8], dropout=0.0)
EMBED_DIM, N_EMBED = 16, 64
TOLERANCE = 1e-4
SEED = 6  # its runner-up codes are >= 2e-3 farther than the best (no near-ties)


def _images(seed: int, shape=(2, 32, 48, 3)) -> np.ndarray:
    """Smooth random images in [-1, 1] (non-square, so a height/width swap shows)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (shape[0], shape[1] // 8, shape[2] // 8, 3))
    fine = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    return np.clip(fine + 0.3 * rng.standard_normal(shape), -1, 1).astype(np.float32)


def build_reference(seed: int = SEED):
    """(torch reference module, its outputs on _images(0)) with random weights from `seed`."""
    torch = pytest.importorskip("torch", reason=REASON)
    model_lib = pytest.importorskip("taming.modules.diffusionmodules.model", reason=REASON)
    quantize_lib = pytest.importorskip("taming.modules.vqvae.quantize", reason=REASON)

    class VQModel(torch.nn.Module):  # taming.models.vqgan.VQModel's network, without Lightning
        def __init__(self):
            super().__init__()
            self.encoder = model_lib.Encoder(**DDCONFIG)
            self.decoder = model_lib.Decoder(**DDCONFIG)
            self.quantize = quantize_lib.VectorQuantizer2(N_EMBED, EMBED_DIM, beta=0.25)
            self.quant_conv = torch.nn.Conv2d(DDCONFIG["z_channels"], EMBED_DIM, 1)
            self.post_quant_conv = torch.nn.Conv2d(EMBED_DIM, DDCONFIG["z_channels"], 1)

        def encode(self, x):
            h = self.quant_conv(self.encoder(x))
            quant, _, (_, _, indices) = self.quantize(h)
            return h, quant, indices

        def decode(self, quant):
            return self.decoder(self.post_quant_conv(quant))

    torch.manual_seed(seed)
    model = VQModel().eval()
    with torch.no_grad():  # random norms and biases too, so a swapped scale/bias would show
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.1)
            elif ".norm" in name or "norm_out" in name:
                param.normal_(1.0, 0.1)
        images = torch.from_numpy(_images(0)).permute(0, 3, 1, 2)
        latents = model.quant_conv(model.encoder(images))  # codes spread like the latents
        spread = latents.permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        model.quantize.embedding.weight.copy_(
            spread[torch.randperm(spread.shape[0])[:N_EMBED]]
            + 0.5 * spread.std() * torch.randn(N_EMBED, EMBED_DIM))
        h, quant, indices = model.encode(images)
        reconstruction = model.decode(quant)
        # How close the runner-up code is: a float32 near-tie could flip an index legitimately.
        flat = h.permute(0, 2, 3, 1).reshape(-1, EMBED_DIM)
        distances = torch.cdist(flat.double(), model.quantize.embedding.weight.double()) ** 2
        best_two = distances.topk(2, largest=False).values
    outputs = dict(
        latents=h.permute(0, 2, 3, 1).numpy(),
        indices=indices.reshape(images.shape[0], *h.shape[2:]).numpy(),
        reconstruction=reconstruction.permute(0, 2, 3, 1).numpy(),
        margin=float((best_two[:, 1] - best_two[:, 0]).min()),
    )
    return model, outputs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(torch reference module, path of its .ckpt, its outputs on _images(0))."""
    torch = pytest.importorskip("torch", reason=REASON)
    model, outputs = build_reference()
    state_dict = dict(model.state_dict())
    state_dict["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)  # training only
    path = tmp_path_factory.mktemp("taming") / "last.ckpt"
    # Like a Lightning checkpoint: training objects besides the tensors (a class as a key).
    torch.save({"epoch": 3, "global_step": 100, "state_dict": state_dict,
                "callbacks": {argparse.Namespace: {"best_model_score": 1.0}}}, path)
    return model, path, outputs


@pytest.fixture(scope="module")
def converted(reference):
    return taming_convert.convert(reference[1], vqgan_configs.get_config)


def test_converter_infers_the_architecture(converted):
    config, _ = converted
    m = config.model
    assert m.name == "taming_vqgan"
    assert (m.filters, tuple(m.channel_multipliers), m.num_res_blocks) == (32, (1, 2, 2), 2)
    assert tuple(m.attention_levels) == (2,) and m.z_channels == 32 and m.embedding_dim == 16
    assert config.quantizer.vq.codebook_size == N_EMBED and not config.quantizer.vq.ema_update


def test_indices_and_reconstructions_match_taming(reference, converted):
    _, _, expected = reference
    config, variables = converted
    model = build_tokenizer(config)
    images = jnp.asarray(_images(0))
    z_q, indices, _ = model.apply(variables, images, method=model.encode)
    reconstruction = model.apply(variables, z_q, method=model.decode)
    from_indices = model.apply(variables, indices, method=model.decode_indices)
    latents = model.apply(variables, images, method=lambda m, x: m.quant_conv(m.encoder(x)))

    assert expected["margin"] > 1e-3, "the fixture has a near-tie; pick another SEED"
    assert len(np.unique(expected["indices"])) > 10  # the codes are actually exercised
    np.testing.assert_allclose(latents, expected["latents"], atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(np.asarray(indices), expected["indices"])
    np.testing.assert_allclose(reconstruction, expected["reconstruction"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(from_indices, expected["reconstruction"], atol=TOLERANCE, rtol=0)


def test_quantizer_loss_matches_taming_legacy_weights(reference, converted):
    """VectorQuantizer2(beta=0.25, legacy=True): |sg[e] - z|^2 + 0.25 |e - sg[z]|^2, and the same
    straight-through gradient into the encoder."""
    torch = pytest.importorskip("torch", reason=REASON)
    torch_model, _, expected = reference
    config, variables = converted
    model = build_tokenizer(config)
    latents = jnp.asarray(expected["latents"])
    z = torch.from_numpy(expected["latents"]).permute(0, 3, 1, 2).requires_grad_(True)
    z_q, torch_loss, _ = torch_model.quantize(z)
    (torch_loss + z_q.square().sum()).backward()

    def loss_fn(x):
        z_q, aux = model.apply(variables, x, method=lambda m, x: m.quantize(x))
        return aux.loss + jnp.sum(z_q ** 2), aux.loss

    grad, loss = jax.grad(loss_fn, has_aux=True)(latents)
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, z.grad.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_converted_config_trains_with_the_tokenizer_trainer_model(converted):
    config, _ = converted
    assert config.trainer == "tokenizer" and config.compute_dtype == "float32"
    # float32 convs and attention on accelerators too (CPU computes float32 either way).
    model = build_tokenizer(config)
    jaxpr = str(jax.make_jaxpr(lambda v, x: model.apply(v, x))(converted[1],
                                                               jnp.zeros((1, 8, 8, 3))))
    convs = re.findall(r"conv_general_dilated\[(.*?)\]", jaxpr, flags=re.S)
    assert len(convs) > 50 and all("precision=(Precision.HIGHEST" in conv for conv in convs)
    attention = re.findall(r"dot_general\[(.*?)\] \w+ \w+\n", jaxpr, flags=re.S)
    # q.k and w.v of the 7 attention blocks (encoder: 2 at level 2 + middle; decoder: middle + 3)
    assert sum("Precision.HIGHEST" in product for product in attention) == 2 * 7
    fresh = vqgan_configs.get_config("taming_f16_1024")
    assert set(config.to_dict()) == set(fresh.to_dict())  # a complete trainer config


# -- bad input ---------------------------------------------------------------------------------
def _resave(tmp_path, reference, edit):
    torch = pytest.importorskip("torch", reason=REASON)
    state_dict = dict(reference[0].state_dict())
    edit(state_dict, torch)
    path = tmp_path / "edited.ckpt"
    torch.save({"state_dict": state_dict}, path)
    return path


def test_missing_key_names_key_and_shape(tmp_path, reference):
    path = _resave(tmp_path, reference,
                   lambda sd, torch: sd.pop("decoder.up.1.block.2.norm2.bias"))
    with pytest.raises(CheckpointError, match=r"decoder\.up\.1\.block\.2\.norm2\.bias.*\(64,\)"):
        taming_convert.convert(path, vqgan_configs.get_config)


def test_wrong_shape_names_key_and_expected_shape(tmp_path, reference):
    def edit(sd, torch):
        sd["decoder.mid.attn_1.q.weight"] = torch.zeros(64, 64, 3, 3)

    path = _resave(tmp_path, reference, edit)
    with pytest.raises(CheckpointError,
                       match=r"decoder\.mid\.attn_1\.q\.weight.*\(64, 64, 3, 3\)"
                             r".*\(64, 64, 1, 1\)"):
        taming_convert.convert(path, vqgan_configs.get_config)


def test_unexpected_key_is_named(tmp_path, reference):
    def edit(sd, torch):
        sd["decoder.extra.weight"] = torch.zeros(3)

    path = _resave(tmp_path, reference, edit)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*decoder\.extra\.weight"):
        taming_convert.convert(path, vqgan_configs.get_config)


def test_not_a_checkpoint(tmp_path, reference):
    pytest.importorskip("torch", reason=REASON)
    garbage = tmp_path / "notes.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        taming_convert.convert(garbage, vqgan_configs.get_config)
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        taming_convert.convert(tmp_path / "missing.ckpt", vqgan_configs.get_config)
    import torch

    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match=r"none of the keys \['state_dict'\]"):
        taming_convert.convert(path, vqgan_configs.get_config)


# -- the model on its own ----------------------------------------------------------------------
def test_released_presets_shapes():
    """The released sizes: f16, 16x16 tokens at 256 px, and the parameter counts of the released
    networks, counted once from the reference modules built with the released configs (taming
    Encoder + Decoder + quant convs + codebook; LlamaGen's VQ_16())."""
    def count(preset):
        model = taming_vqgan.create(preset)
        abstract = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x),
                                  jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))

    model = taming_vqgan.create("taming_f16_1024")
    assert model.token_grid(256, 256) == (16, 16) and model.resolved_attention_levels == (4,)
    assert count("taming_f16_1024") == 72_141_699
    assert count("taming_f16_16384") == 76_073_859
    assert count("llamagen_vq16") == 71_883_403
    assert taming_vqgan.create("llamagen_vq16").latent_channels == 8


def test_bad_fields_are_named():
    with pytest.raises(ValueError, match="attention_levels"):
        taming_vqgan.create("tiny", attention_levels=(5,)).init(
            jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="norm_groups"):
        taming_vqgan.create("tiny", filters=48).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_taming_tiny_trains_with_the_tokenizer_trainer():
    """configs/vqgan.py:taming_tiny through the tokenizer trainer's own step: the gradient-trained
    codebook moves, the PatchGAN and hinge terms run, and the loss stays finite."""
    from vqjax.train import mesh as mesh_lib
    from vqjax.train.tokenizer import TokenizerTrainer

    config = vqgan_configs.get_config("taming_tiny,res=16")
    config.batch_size = 8
    config.loss.disc_start_step = 0
    config.discriminator.num_layers = 2  # 3 layers leave no logits at 16 px (taming's padding)
    # Two levels instead of three: compiles faster.
    config.model.channel_multipliers, config.model.attention_levels = (1, 2), (1,)
    trainer = TokenizerTrainer(config, mesh_lib.make_mesh())
    assert isinstance(trainer.model, taming_vqgan.TamingVQGAN)
    state = trainer.init_state(jax.random.key(0))
    images = jnp.asarray(_images(1, (8, 16, 16, 3)))
    step = jax.jit(trainer.train_step)
    new_state, metrics = step(state, {"image": images})
    new_state, metrics = step(new_state, {"image": images})
    assert int(new_state.step) == 2 and float(metrics["train/finite"]) == 1.0
    for key in ("loss/loss", "loss/l1", "quantizer/codebook_loss", "disc/loss"):
        assert np.isfinite(float(metrics[key])), key
    codebook = lambda s: s.params["quantize"]["quantizer"]["codebook"]  # noqa: E731
    assert float(jnp.abs(codebook(new_state) - codebook(state)).max()) > 0


@pytest.mark.parametrize("preset, n_embed", [("taming_f16_1024", 1024),
                                             ("taming_f16_16384", 16384)])
def test_released_sizes_take_the_same_path(preset, n_embed):
    """The released configs' state dicts (shapes from taming's modules on the meta device, no
    weights) infer exactly the preset, and every tensor maps onto the preset's network."""
    torch = pytest.importorskip("torch", reason=REASON)
    model_lib = pytest.importorskip("taming.modules.diffusionmodules.model", reason=REASON)
    quantize_lib = pytest.importorskip("taming.modules.vqvae.quantize", reason=REASON)
    released = dict(DDCONFIG, z_channels=256, resolution=256, ch=128, ch_mult=(1, 1, 2, 2, 4),
                    num_res_blocks=2, attn_resolutions=[16])
    with torch.device("meta"):
        modules = dict(encoder=model_lib.Encoder(**released),
                       decoder=model_lib.Decoder(**released),
                       quantize=quantize_lib.VectorQuantizer2(n_embed, 256, beta=0.25),
                       quant_conv=torch.nn.Conv2d(256, 256, 1),
                       post_quant_conv=torch.nn.Conv2d(256, 256, 1))
    state_dict = {f"{prefix}.{key}": np.empty(tuple(value.shape), np.float32)
                  for prefix, module in modules.items()
                  for key, value in module.state_dict().items()}
    arch = taming_convert.infer_architecture(
        state_dict, blocks=lambda level: f"encoder.down.{level}.block.",
        attentions=lambda level: f"encoder.down.{level}.attn.")
    config = taming_convert.make_config(vqgan_configs.get_config, taming_convert.config_preset(n_embed), arch)
    assert config.model.to_dict() == vqgan_configs.get_config(preset).model.to_dict() | {
        "precision": "highest"}
    assert config.quantizer.vq.codebook_size == n_embed
    variables = taming_convert.build_variables(build_tokenizer(config), state_dict,
                                               taming_convert.torch_key,
                                               taming_convert.is_training_only, "taming")
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == sum(
        x.size for x in state_dict.values())


def test_nearest_code_matches_vector_quantizer2_with_16384_codes_and_ties():
    """VectorQuantizer2's argmin over 16384 codes (vqjax searches them in two chunks) gives the same
    indices, including exact ties between duplicated codes, where both take the lower index."""
    torch = pytest.importorskip("torch", reason=REASON)
    quantize_lib = pytest.importorskip("taming.modules.vqvae.quantize", reason=REASON)
    from vqjax import quantizers

    torch.manual_seed(0)
    reference = quantize_lib.VectorQuantizer2(16384, 8, beta=0.25).eval()
    with torch.no_grad():
        codes = reference.embedding.weight
        codes.normal_()
        codes[12000] = codes[100]  # duplicates across the two 8192-code chunks
        codes[8191] = codes[8192]
        latents = torch.randn(2, 8, 16, 16)
        latents[0, :, 0, 0], latents[1, :, 3, 5] = codes[100], codes[8192]
        _, _, (_, _, expected) = reference(latents)
    quantizer = quantizers.build("vq", **{**taming_vqgan.DEFAULT_VQ_OPTIONS,
                                          "codebook_size": 16384})
    variables = quantizer.init(jax.random.key(0), jnp.zeros((1, 8)))
    variables["params"]["codebook"] = jnp.asarray(codes.detach().numpy())
    _, out = quantizer.apply(variables, jnp.asarray(latents.permute(0, 2, 3, 1).numpy()))
    indices = np.asarray(out.indices).reshape(-1)
    np.testing.assert_array_equal(indices, expected.numpy())
    assert indices[0] == 100 and indices[16 * 16 + 3 * 16 + 5] == 8191


def test_the_other_converters_checkpoint_is_refused(reference):
    """A taming .ckpt given to the LlamaGen converter, and LlamaGen's .pt to taming's."""
    pytest.importorskip("torch", reason=REASON)
    from vqjax.convert import llamagen

    with pytest.raises(CheckpointError, match=r"encoder\.conv_blocks\.0\.res\.0\.conv1\.weight"):
        llamagen.convert(reference[1], vqgan_configs.get_config)
    llamagen_file = pathlib.Path(__file__).parent / "data" / "llamagen" / "vq_tiny.pt"
    with pytest.raises(CheckpointError, match=r"none of the keys \['state_dict'\].*'model'"):
        taming_convert.convert(llamagen_file, vqgan_configs.get_config)


def test_legacy_torch_format_reads_the_same(tmp_path, reference, converted):
    """torch.save's pre-1.6 (non-zip) format, with a pickled object besides the tensors."""
    torch = pytest.importorskip("torch", reason=REASON)
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": reference[0].state_dict(), "hparams": argparse.Namespace(lr=1.0)},
               path, _use_new_zipfile_serialization=False)
    _, variables = taming_convert.convert(path, vqgan_configs.get_config)
    jax.tree.map(np.testing.assert_array_equal, variables, converted[1])
