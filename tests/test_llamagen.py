"""vqjax.convert.llamagen against LlamaGen's own VQModel (tests/data/llamagen, see its README).

The fixture is a small network (ch 32, two levels, one res block, 64 codes of 8-d, l2-normalised)
made with random weights by FoundationVision/LlamaGen's `tokenizer/tokenizer_image/vq_model.py`,
saved in vq_train.py's checkpoint layout, with the reference's outputs on two images. The converted
model must give identical indices and reconstructions within 1e-4.
"""

from __future__ import annotations

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

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
    return llamagen.convert(CHECKPOINT)


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
    _, variables = llamagen.convert(path)
    _, reference = llamagen.convert(CHECKPOINT)
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
        return llamagen.convert(path)

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
        llamagen.convert(path)
