"""vqjax.convert.llamagen against LlamaGen's own VQModel (tests/data/llamagen, see its README).

The fixture is a small network (ch 32, two levels, one res block, 64 codes of 8-d, l2-normalised)
made with random weights by FoundationVision/LlamaGen's `tokenizer/tokenizer_image/vq_model.py`,
saved in vq_train.py's checkpoint layout, with the reference's outputs on two images. The converted
model must give identical indices and reconstructions within 1e-4.
"""

from __future__ import annotations

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from configs import vqgan as vqgan_configs
from vqjax.convert import llamagen
from vqjax.convert.torch_checkpoint import CheckpointError
from vqjax.train.tokenizer import build_tokenizer

DATA = pathlib.Path(__file__).parent / "data" / "llamagen"
CHECKPOINT = DATA / "vq_tiny.pt"
TOLERANCE = 1e-4
REASON = "reading LlamaGen's .pt checkpoints needs torch (pip install torch==2.13.0, CPU wheel)"


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(DATA / "reference.npz"))


@pytest.fixture(scope="module")
def converted():
    pytest.importorskip("torch", reason=REASON)
    return llamagen.convert(CHECKPOINT, vqgan_configs.get_config)


def test_converter_infers_the_architecture(converted):
    config, _ = converted
    m, vq = config.model, config.quantizer.vq
    assert m.name == "taming_vqgan" and config.compute_dtype == "float32"
    assert (m.filters, tuple(m.channel_multipliers), m.num_res_blocks) == (32, (1, 1), 1)
    assert tuple(m.attention_levels) == (1,) and m.z_channels == 32 and m.embedding_dim == 8
    assert (vq.codebook_size, vq.use_cosine_sim, vq.ema_update) == (64, True, False)
    assert (vq.commitment_weight, vq.codebook_weight) == (0.25, 1.0)


def test_indices_and_reconstructions_match_llamagen(converted, expected):
    config, variables = converted
    model = build_tokenizer(config)
    images = jnp.asarray(expected["images"])
    latents = model.apply(variables, images, method=lambda m, x: m.quant_conv(m.encoder(x)))
    z_q, indices, _ = model.apply(variables, images, method=model.encode)
    reconstruction = model.apply(variables, z_q, method=model.decode)
    from_indices = model.apply(variables, indices, method=model.decode_indices)

    assert expected["margin"] > 1e-3  # no near-tie between a latent's best two codes
    assert len(np.unique(expected["indices"])) > 20
    np.testing.assert_allclose(latents, expected["latents"], atol=TOLERANCE, rtol=0)
    np.testing.assert_array_equal(np.asarray(indices), expected["indices"])
    np.testing.assert_allclose(reconstruction, expected["reconstruction"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(from_indices, expected["reconstruction_from_codes"],
                               atol=TOLERANCE, rtol=0)


def test_ema_weights_are_preferred(tmp_path):
    """LlamaGen's loaders take checkpoint["ema"] over checkpoint["model"]; so does the converter."""
    torch = pytest.importorskip("torch", reason=REASON)
    state_dict = torch.load(CHECKPOINT, weights_only=False)["model"]
    path = tmp_path / "ema.pt"
    torch.save({"ema": state_dict, "model": {"broken": torch.zeros(1)}}, path)
    _, variables = llamagen.convert(path, vqgan_configs.get_config)
    _, reference = llamagen.convert(CHECKPOINT, vqgan_configs.get_config)
    np.testing.assert_array_equal(
        variables["params"]["decoder"]["conv_out"]["kernel"],
        reference["params"]["decoder"]["conv_out"]["kernel"])


def test_missing_and_wrong_keys_are_named(tmp_path):
    torch = pytest.importorskip("torch", reason=REASON)
    state_dict = torch.load(CHECKPOINT, weights_only=False)["model"]

    def convert_edited(edit):
        edited = dict(state_dict)
        edit(edited)
        path = tmp_path / "edited.pt"
        torch.save({"model": edited}, path)
        return llamagen.convert(path, vqgan_configs.get_config)

    with pytest.raises(CheckpointError, match=r"'decoder\.conv_blocks\.0\.attn\.1\.proj_out\.bias'"
                                              r".*\(32,\)"):
        convert_edited(lambda sd: sd.pop("decoder.conv_blocks.0.attn.1.proj_out.bias"))
    with pytest.raises(CheckpointError, match=r"'post_quant_conv\.weight' has shape \(32, 4, 1, 1\)"
                                              r".*expected \(32, 8, 1, 1\)"):
        convert_edited(lambda sd: sd.update({"post_quant_conv.weight": torch.zeros(32, 4, 1, 1)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys.*encoder\.mid\.3\.norm1\.weight"):
        convert_edited(lambda sd: sd.update({"encoder.mid.3.norm1.weight": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match=r"none of the keys \['ema', 'model', 'state_dict'\]"):
        path = tmp_path / "opt.pt"
        torch.save({"optimizer": {}}, path)
        llamagen.convert(path, vqgan_configs.get_config)


def test_released_vq16_layout_infers_the_preset():
    """The state-dict names and shapes of LlamaGen's VQ_16() (vq_ds16_c2i.pt's network; listed in
    vq_ds16_shapes.json, see the README) infer exactly `configs/vqgan.py:llamagen_vq16`, and every
    tensor maps onto its network. No weights: empty arrays of those shapes."""
    import jax

    from configs import vqgan as vqgan_configs
    from vqjax.convert import taming

    shapes = json.loads((DATA / "vq_ds16_shapes.json").read_text())
    state_dict = {key: np.empty(shape, np.float32) for key, shape in shapes.items()}
    arch = taming.infer_architecture(
        state_dict, blocks=lambda level: f"encoder.conv_blocks.{level}.res.",
        attentions=lambda level: f"encoder.conv_blocks.{level}.attn.", source="llamagen")
    config = taming.make_config(vqgan_configs.get_config, llamagen.CONFIG_PRESET, arch)
    preset = vqgan_configs.get_config("llamagen_vq16")
    assert config.model.to_dict() == preset.model.to_dict() | {"precision": "highest"}
    assert config.quantizer.to_dict() == preset.quantizer.to_dict()
    variables = taming.build_variables(
        build_tokenizer(config), state_dict, llamagen.torch_key_for(5), llamagen.is_training_only,
        "llamagen")
    mapped = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    assert mapped == sum(a.size for k, a in state_dict.items() if k != "quantize.codebook_used")
    assert mapped == 71_883_403
