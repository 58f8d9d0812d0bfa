"""MaskGIT's released checkpoints -> vqjax runs (`launch.convert --from=maskgit`), exactly.

The fixtures in tests/data/maskgit (see its README) are files in the released format, written by
google-research/maskgit's own modules with random weights at a small size, and those modules'
outputs on fixed inputs. The converted models must give identical token indices, decoded images
within 1e-4 and logits within 1e-4 relative, through the library, the written runs and
`vqjax.load`; the runs must sample, evaluate and fine-tune like any run; bad input is a clear
error that leaves nothing written.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import maskgit as maskgit_configs
from configs import vqgan as vqgan_configs
from launch import convert as convert_cli
from vqjax.convert import ConversionError
from vqjax.convert import maskgit as convert_maskgit

DATA = Path(__file__).resolve().parent / "data" / "maskgit"
TOKENIZER = DATA / "maskgit_tokenizer_tiny.msgpack"
TRANSFORMER = DATA / "maskgit_transformer_tiny.msgpack"
NUM_CLASSES, IMAGE_SIZE, CODES = 10, 16, 64


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(DATA / "maskgit_tiny_outputs.npz"))


def _tokenizer(image_size=IMAGE_SIZE):
    from vqjax.train.tokenizer import build_tokenizer

    config, variables = convert_maskgit.tokenizer_from_checkpoint(
        TOKENIZER, vqgan_configs.get_config("maskgit_released"), image_size=image_size)
    return config, build_tokenizer(config), variables


def _masked(reference, mask_token_id):
    """The fixture's masked token grids, the released mask id -1 replaced by ours."""
    masked = np.where(reference["masked"] == -1, mask_token_id, reference["masked"])
    return masked.reshape(-1, 4, 4)


def _expected_logits(reference):
    """The official logits at the token positions (not the class token's), code columns only."""
    return reference["logits"][:, 1:, :CODES].reshape(-1, 4, 4, CODES)


def _relative(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------------
# The architectures, against the official modules' outputs
# ------------------------------------------------------------------------------------------------
def test_tokenizer_architecture_is_inferred_from_the_tree():
    import flax

    tree = flax.serialization.msgpack_restore(TOKENIZER.read_bytes())
    arch = convert_maskgit.infer_tokenizer(convert_maskgit.flatten(tree["params"]))
    assert arch == dict(filters=32, num_res_blocks=2, channel_multipliers=(1, 1, 2),
                        embedding_dim=16, codebook_size=CODES)


def test_converted_tokenizer_gives_the_official_indices_and_images(reference):
    import jax.numpy as jnp

    _, model, variables = _tokenizer()
    images = jnp.asarray(reference["images"] * 2.0 - 1.0)  # the official inputs are [0, 1]
    z_q, indices, _ = model.apply(variables, images, method=model.encode)
    np.testing.assert_array_equal(np.asarray(indices), reference["indices"])
    np.testing.assert_allclose(np.asarray(z_q), reference["quantized"], atol=1e-5)
    decoded = model.apply(variables, jnp.asarray(reference["indices"]),
                          method=model.decode_indices)
    # Ours maps the released [0, 1] output to [-1, 1].
    assert np.max(np.abs((np.asarray(decoded) + 1.0) / 2.0 - reference["decoded"])) < 1e-4


def test_released_pixel_range_matters(reference):
    """Without pixel_range="unit" the same weights give other indices and images (the shortcut
    option is checked by the shapes: the released 1x1 shortcut kernels fit only "output")."""
    import jax.numpy as jnp

    _, model, variables = _tokenizer()
    other = model.clone(pixel_range="signed")
    _, indices, _ = other.apply(variables, jnp.asarray(reference["images"] * 2.0 - 1.0),
                                method=other.encode)
    assert np.mean(np.asarray(indices) != reference["indices"]) > 0.2
    decoded = np.asarray(other.apply(variables, jnp.asarray(reference["indices"]),
                                     method=other.decode_indices))
    assert np.max(np.abs((decoded + 1.0) / 2.0 - reference["decoded"])) > 1e-2


def test_converted_transformer_gives_the_official_logits(reference):
    import jax.numpy as jnp

    from vqjax.train.maskgit import build_maskgit

    _, tokenizer_model, _ = _tokenizer()
    config, params = convert_maskgit.transformer_from_checkpoint(
        TRANSFORMER, maskgit_configs.get_config("released"), tokenizer_model, "unused",
        num_classes=NUM_CLASSES, image_size=IMAGE_SIZE)
    assert list(config.model.size) == [2, 32, 2, 64] and config.model.architecture == "bert"
    model = build_maskgit(config, tokenizer_model, NUM_CLASSES)
    # The released vocabulary: codes, classes, and the mask (id -1) as the last row.
    assert model.mask_token_id == CODES + NUM_CLASSES == model.bert_vocab_size - 1
    logits = model.apply({"params": params}, jnp.asarray(_masked(reference, model.mask_token_id)),
                         jnp.asarray(reference["labels"]))
    assert logits.shape == (4, 4, 4, CODES) and logits.dtype == jnp.float32
    assert _relative(logits, _expected_logits(reference)) < 1e-4
    # The class token is the class's vocabulary row: another label changes the logits.
    other = model.apply({"params": params}, jnp.asarray(_masked(reference, model.mask_token_id)),
                        jnp.asarray((reference["labels"] + 1) % NUM_CLASSES))
    assert _relative(other, _expected_logits(reference)) > 2e-4  # (exact match: 0.0)


def test_transformer_key_mapping_is_one_to_one():
    keys = ["word_embedding", "position_embedding", "ln_embedding/scale",
            "block_00/attention/query/kernel", "block_11/ln_attention/bias", "block_01/wi/kernel",
            "block_01/wo/bias", "block_01/ln_feed_forward/scale", "head_hidden/kernel",
            "head_ln/bias", "head_output_bias"]
    released = [convert_maskgit._transformer_key(k) for k in keys]
    assert released == [
        "Embed_0/word_embeddings/embedding", "Embed_0/position_embeddings/embedding",
        "Embed_0/embeddings_ln/scale", "TransformerLayer_0/Attention_0/self_attention/query/kernel",
        "TransformerLayer_11/Attention_0/attention_output_ln/bias",
        "TransformerLayer_1/Mlp_0/intermediate_output/kernel",
        "TransformerLayer_1/Mlp_0/layer_output/bias", "TransformerLayer_1/Mlp_0/layer_output_ln/scale",
        "MlmLayer_0/mlm_dense/kernel", "MlmLayer_0/mlm_ln/bias", "MlmLayer_0/mlm_bias/bias"]


def test_512px_transformer_sizes_are_inferred():
    """The released 512 px layout (32x32 tokens + class: 1025 positions), from shapes alone."""
    flat = {"Embed_0/word_embeddings/embedding": np.zeros((2025, 8)),
            "Embed_0/position_embeddings/embedding": np.zeros((1025, 8)),
            "TransformerLayer_0/Attention_0/self_attention/query/kernel": np.zeros((8, 2, 4)),
            "TransformerLayer_0/Mlp_0/intermediate_output/kernel": np.zeros((8, 32)),
            "TransformerLayer_1/Mlp_0/intermediate_output/kernel": np.zeros((8, 32))}
    arch = convert_maskgit.infer_transformer(flat, 1000)
    assert (arch["grid"], arch["codebook_size"], arch["num_layers"], arch["num_heads"],
            arch["mlp_dim"]) == (32, 1024, 2, 2, 32)
    assert convert_cli.size_from_name("ckpts/tokenizer_imagenet512_checkpoint") == 512
    assert convert_cli.size_from_name("mine.msgpack") is None


def test_released_presets_have_the_released_shapes():
    """configs/*:released build the released networks' parameter shapes (256 px: 16x16 tokens)."""
    import jax
    import jax.numpy as jnp

    from vqjax.train.maskgit import build_maskgit
    from vqjax.train.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(vqgan_configs.get_config("maskgit_released"))
    model = build_maskgit(maskgit_configs.get_config("released"), tokenizer, 1000)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16, 16), jnp.int32),
                                               jnp.zeros((1,), jnp.int32)))["params"]
    assert shapes["word_embedding"].shape == (1024 + 1000 + 1, 768)
    assert shapes["position_embedding"].shape == (257, 768)
    assert shapes["block_23"]["attention"]["query"]["kernel"].shape == (768, 16, 48)
    assert shapes["block_23"]["wi"]["kernel"].shape == (768, 3072)
    assert model.mask_token_id == 2024 and model.null_label == 1000
    variables = jax.eval_shape(lambda: tokenizer.init(
        {"params": jax.random.key(0), "quantizer": jax.random.key(0)},
        jnp.zeros((1, 256, 256, 3))))
    assert variables["params"]["quantize"]["quantizer"]["codebook"].shape == (1024, 256)
    assert variables["params"]["encoder"]["Conv_0"]["kernel"].shape == (3, 3, 3, 128)
    assert tokenizer.token_grid(512, 512) == (32, 32)


def test_bert_maskgit_trains_and_rejects_other_options():
    import jax
    import jax.numpy as jnp

    from vqjax.models import maskgit

    model = maskgit.create("released", vocab_size=16, num_classes=3, size=(1, 16, 2, 32))
    tokens = jnp.full((2, 2, 2), model.mask_token_id, jnp.int32)
    variables = model.init(jax.random.key(0), tokens, jnp.array([0, 1]))

    def loss(params):
        logits = model.apply({"params": params}, tokens, jnp.array([0, 2]), train=True,
                             rngs={"dropout": jax.random.key(1)})
        return maskgit.masked_cross_entropy(logits, jnp.zeros((2, 2, 2), jnp.int32),
                                            jnp.ones((2, 4), bool))

    grads = jax.grad(loss)(variables["params"])
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["word_embedding"]).sum()) > 0
    # Unconditional (the null label) = the mask row as class token.
    null = model.apply(variables, tokens, None)
    mask_row = model.apply(variables, tokens, jnp.array([3, 3]))
    np.testing.assert_array_equal(np.asarray(null), np.asarray(mask_row))
    with pytest.raises(ValueError, match="needs `prediction`='index'"):
        maskgit.create("released", vocab_size=16, prediction="bits").init(
            jax.random.key(0), tokens)
    with pytest.raises(ValueError, match="position embeddings hold 5 positions"):
        model.apply(variables, jnp.zeros((2, 4, 4), jnp.int32), None)


# ------------------------------------------------------------------------------------------------
# launch.convert -> runs every entry point accepts
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, data_dir):
    """Both halves converted (16 px digits as the runs' dataset, 10 classes)."""
    out = tmp_path_factory.mktemp("converted") / "maskgit_tiny"
    written = convert_cli.convert_maskgit(
        str(out), str(TOKENIZER), str(TRANSFORMER), num_classes=NUM_CLASSES,
        image_size=IMAGE_SIZE, dataset="vqjax_digits", data_dir=str(data_dir))
    assert written == {"tokenizer": out / "tokenizer", "maskgit": out / "maskgit"}
    return out


def test_vqjax_load_of_converted_runs_matches_the_official_outputs(converted, reference,
                                                                  monkeypatch):
    import vqjax
    from vqjax.losses import perceptual
    from vqjax.train import loop, tokenizer as tokenizer_train

    def forbidden(*args, **kwargs):
        raise AssertionError("vqjax.load built something inference does not use")

    # Inference builds no optimizer, discriminator, LPIPS or VGG16.
    monkeypatch.setattr(perceptual, "load_lpips", forbidden)
    monkeypatch.setattr(tokenizer_train, "build_discriminator", forbidden)
    monkeypatch.setattr(loop, "build_optimizer", forbidden)
    tokenizer = vqjax.load(converted / "tokenizer")
    assert type(tokenizer).__name__ == "Tokenizer" and tokenizer.step == 0
    assert tokenizer.grid_shape() == (4, 4) and tokenizer.grid_shape(32) == (8, 8)
    assert tokenizer.codebook_size == CODES
    # 3 images on 8 devices: the batch is padded and split, the padding dropped.
    indices = tokenizer.encode(reference["images"][:3] * 2.0 - 1.0)
    np.testing.assert_array_equal(np.asarray(indices), reference["indices"][:3])
    decoded = np.asarray(tokenizer.decode(reference["indices"]))
    assert np.max(np.abs((decoded + 1) / 2 - np.clip(reference["decoded"], 0, 1))) < 1e-4
    recon = np.asarray(tokenizer.reconstruct(reference["images"] * 2.0 - 1.0))
    np.testing.assert_allclose(recon, decoded, atol=1e-5)

    maskgit = vqjax.load(converted / "maskgit")
    assert type(maskgit).__name__ == "MaskGIT" and maskgit.tokenizer.workdir == str(
        converted / "tokenizer")
    logits = maskgit.logits(_masked(reference, maskgit.mask_token_id), reference["labels"])
    assert _relative(logits, _expected_logits(reference)) < 1e-4
    # The released decoding settings are the run's defaults.
    options = maskgit.decode_options()
    assert (options["choice_temperature"], options["schedule"], options["num_steps"]) == (
        4.5, "cosine", 8)
    images = maskgit.sample(np.array([0, 5, 9]), num_steps=2)
    assert images.shape == (3, 16, 16, 3) and -1 <= float(images.min()) <= float(images.max()) <= 1

    source = json.loads((converted / "maskgit" / "converted_from.json").read_text())
    assert source["from"] == "maskgit" and len(source["sha256"]) == 64


def test_moved_runs_find_their_tokenizer_and_pinned_steps_are_used(converted, tmp_path):
    import shutil

    import ml_collections

    import vqjax
    from vqjax import inference

    moved = tmp_path / "moved"
    shutil.copytree(converted, moved)
    shutil.move(str(converted), str(tmp_path / "elsewhere"))  # the recorded path is gone
    try:
        maskgit = vqjax.load(moved / "maskgit")
        assert maskgit.tokenizer.workdir == str(moved / "tokenizer")
    finally:
        shutil.move(str(tmp_path / "elsewhere"), str(converted))
    config = ml_collections.ConfigDict({"tokenizer_workdir": "runs/tok", "tokenizer_step": 300})
    assert inference.tokenizer_location(config)[1] == 300
    config.tokenizer_step = -1
    assert inference.tokenizer_location(config)[1] is None
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 7 .* available steps: 0"):
        vqjax.load(moved / "tokenizer", step=7)


def test_launch_sample_and_evaluate_take_converted_runs(converted, tmp_path):
    from vqjax.evaluation import evaluators as evaluate
    from vqjax.sampling.grids import sample_grids

    result = sample_grids(str(converted / "maskgit"), str(tmp_path / "samples"), labels=[1, 7],
                           num_per_label=2, num_steps=2)
    assert [p.name for p in result["files"]] == ["label_1.png", "label_1_tokens.npy",
                                                  "label_7.png", "label_7_tokens.npy"]
    tokens = np.load(tmp_path / "samples" / "label_1_tokens.npy")
    assert tokens.shape == (2, 4, 4) and tokens.min() >= 0 and tokens.max() < CODES

    options = evaluate.EvalOptions(inception_weights="random", num_examples=4, batch_size=8,
                                   lpips=False, progress=False)
    results = evaluate.evaluate(str(converted / "tokenizer"), options)
    assert results["examples"] == 4 and np.isfinite(results["psnr"]) and results["rfid"] > 0
    # (MaskGIT FID/IS go through the same vqjax.load handle: tests/test_evaluate_cli.py.)


def test_transformer_alone_pairs_with_an_existing_tokenizer_run(converted, reference, tmp_path):
    import vqjax

    written = _convert(tmp_path / "out", tokenizer=None,
                       tokenizer_workdir=str(converted / "tokenizer"), image_size=None)
    assert list(written) == ["maskgit"] and not (tmp_path / "out" / "tokenizer").exists()
    maskgit = vqjax.load(written["maskgit"])
    assert maskgit.tokenizer.workdir == str(converted / "tokenizer")
    logits = maskgit.logits(_masked(reference, maskgit.mask_token_id), reference["labels"])
    assert _relative(logits, _expected_logits(reference)) < 1e-4


def test_converted_maskgit_fine_tunes(converted, data_dir):
    """launch.train resumes the converted run (step 0) and trains on."""
    import shutil

    import ml_collections

    from vqjax.train import maskgit as maskgit_train

    workdir = converted.parent / "finetune"
    shutil.copytree(converted / "maskgit", workdir)
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    config.update_from_flattened_dict({
        "batch_size": 8, "total_steps": 2, "log_every_steps": 1, "checkpoint_every_steps": 2,
        "eval_every_steps": 0, "image_every_steps": 0, "dataset.crop": "center"})
    metrics = maskgit_train.train_and_evaluate(config, str(workdir))
    assert np.isfinite(metrics["loss/loss"])
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
        0, 2]


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing written
# ------------------------------------------------------------------------------------------------
def _rewrite(tmp_path, source, edit, name="edited"):
    import flax

    tree = flax.serialization.msgpack_restore(Path(source).read_bytes())
    edit(tree["params"])
    path = tmp_path / name
    path.write_bytes(flax.serialization.msgpack_serialize(tree))
    return path


def _convert(out, tokenizer=TOKENIZER, transformer=TRANSFORMER, **kw):
    kw = {"num_classes": NUM_CLASSES, "image_size": IMAGE_SIZE, **kw}
    return convert_cli.convert_maskgit(str(out), tokenizer and str(tokenizer),
                                       transformer and str(transformer), **kw)


def test_bad_files_are_errors_naming_the_key(tmp_path):
    out = tmp_path / "out"
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(ConversionError, match="not a flax msgpack checkpoint"):
        _convert(out, junk, None)

    def drop(params):
        del params["decoder"]["ResBlock_4"]["Conv_2"]

    with pytest.raises(ConversionError, match=r"missing key 'decoder/ResBlock_4/Conv_2/kernel' "
                                              r"\(expected shape \(1, 1, 32, 32\)\)"):
        _convert(out, _rewrite(tmp_path, TOKENIZER, drop), None)

    def extra(params):
        params["encoder"]["Attention_0"] = {"kernel": np.zeros((2, 2), np.float32)}

    with pytest.raises(ConversionError, match=r"unexpected key 'encoder/Attention_0/kernel'"):
        _convert(out, _rewrite(tmp_path, TOKENIZER, extra), None)

    def reshape(params):
        params["TransformerLayer_1"]["Mlp_0"]["layer_output"]["kernel"] = np.zeros((64, 16),
                                                                                    np.float32)

    with pytest.raises(ConversionError, match=r"'TransformerLayer_1/Mlp_0/layer_output/kernel' has "
                                              r"shape \(64, 16\), expected \(64, 32\)"):
        _convert(out, TOKENIZER, _rewrite(tmp_path, TRANSFORMER, reshape))
    assert not out.exists()


def test_mismatched_pairs_fail_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    # A transformer for another codebook size (here: a wrong class count shifts it).
    with pytest.raises(ConversionError, match="tokenizer has 64 codes"):
        _convert(out, num_classes=NUM_CLASSES + 1)
    # A transformer for a larger resolution than the tokenizer's.

    def larger_grid(params):
        embedding = params["Embed_0"]["position_embeddings"]["embedding"]
        params["Embed_0"]["position_embeddings"]["embedding"] = np.zeros(
            (65, embedding.shape[1]), np.float32)  # 8x8 tokens + class: 32 px

    with pytest.raises(ConversionError, match="a 32 px transformer with a 16 px tokenizer"):
        _convert(out, transformer=_rewrite(tmp_path, TRANSFORMER, larger_grid))
    assert not out.exists() and not any(tmp_path.glob("**/.*converting*"))


def test_existing_runs_are_kept(tmp_path):
    out = tmp_path / "out"
    (out / "tokenizer").mkdir(parents=True)
    (out / "tokenizer" / "mine").write_text("keep")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _convert(out)
    assert (out / "tokenizer" / "mine").read_text() == "keep" and not (out / "maskgit").exists()


def test_cli_reports_errors_without_a_traceback(tmp_path):
    from tests.train_utils import run, subprocess_env

    junk = tmp_path / "junk"
    junk.write_bytes(b"junk")
    proc = run([sys.executable, "-m", "launch.convert", "--from=maskgit",
                f"--tokenizer_checkpoint={junk}", f"--out={tmp_path / 'out'}"],
               subprocess_env(devices=1), timeout=120, check=False)
    assert proc.returncode == 1 and "not a flax msgpack checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    proc = run([sys.executable, "-m", "launch.convert", "--from=taming2", f"--out={tmp_path}"],
               subprocess_env(devices=1), timeout=120, check=False)
    assert proc.returncode != 0 and "choose one of maskgit" in proc.stderr


def test_tokenizer_only_sources_write_runs_through_the_same_path(tmp_path):
    """--from=llamagen (like taming: vqjax.convert.<name>.convert -> write_tokenizer_run): the
    written run loads with vqjax.load and gives the reference's indices."""
    pytest.importorskip("torch", reason="reading LlamaGen's .pt checkpoints needs torch")
    import vqjax

    data = Path(__file__).resolve().parent / "data" / "llamagen"
    written = convert_cli.convert_tokenizer("llamagen", str(tmp_path / "llamagen"),
                                            str(data / "vq_tiny.pt"))
    tokenizer = vqjax.load(written["tokenizer"])
    reference = np.load(data / "reference.npz")
    np.testing.assert_array_equal(np.asarray(tokenizer.encode(reference["images"])),
                                  reference["indices"])
    source = json.loads((written["tokenizer"] / "converted_from.json").read_text())
    assert source["from"] == "llamagen"
    with pytest.raises(FileExistsError):
        convert_cli.convert_tokenizer("llamagen", str(tmp_path / "llamagen"),
                                      str(data / "vq_tiny.pt"))
