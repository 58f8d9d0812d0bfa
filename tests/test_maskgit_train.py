"""The MaskGIT trainer end to end on the labelled built-in digits: a micro tokenizer run -> a micro
MaskGIT run -> launch.sample; eval, EMA, gradient accumulation, SIGTERM + exact resume, restore on
another mesh, non-finite steps, pre-encoded token datasets, and clear errors."""

import json

import numpy as np
import pytest
from PIL import Image

from configs import maskgit as maskgit_config
import vqjax
from tests.train_utils import apply_overrides, micro_config, read_metrics
from vqjax.train import maskgit as maskgit_train
from vqjax.data import tokens as tokens_lib
from vqjax.train.tokenizer import train_and_evaluate as train_tokenizer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def tokenizer_workdir(tmp_path_factory, data_dir):
    """Two steps of the tiny ViT-VQGAN on 16px digits (4x4 tokens of a 64-code vq)."""
    workdir = tmp_path_factory.mktemp("tokenizer")
    config = micro_config(data_dir, **{
        "dataset.name": "vqjax_digits", "dataset.crop": "center", "total_steps": 2,
        "checkpoint_every_steps": 2, "eval_every_steps": 0, "image_every_steps": 100,
        "log_every_steps": 1, "loss.disc_start_step": 100})
    train_tokenizer(config, str(workdir))
    return workdir


def maskgit_micro(data_dir, tokenizer_workdir, **overrides):
    c = maskgit_config.get_config("tiny")
    c.tokenizer_workdir = str(tokenizer_workdir)
    c.dataset.data_dir = str(data_dir)
    c.batch_size = 8
    c.total_steps = 4
    c.log_every_steps = 2
    c.checkpoint_every_steps = 2
    c.image_every_steps = 4
    c.sample.num_steps = 4
    c.sample.per_class = 1
    c.optimizer.warmup_steps = 2
    c.eval_examples = 12  # not a multiple of the batch: the last eval batch is partly masked
    return apply_overrides(c, overrides)


@pytest.fixture(scope="module")
def maskgit_run(tmp_path_factory, data_dir, tokenizer_workdir):
    workdir = tmp_path_factory.mktemp("maskgit")
    metrics = maskgit_train.train_and_evaluate(maskgit_micro(data_dir, tokenizer_workdir),
                                               str(workdir))
    return workdir, metrics


def test_train_outputs(maskgit_run):
    workdir, last = maskgit_run
    records = [r for r in read_metrics(workdir) if "loss/loss" in r]
    assert [r["step"] for r in records] == [2, 4]
    evals = [r for r in read_metrics(workdir) if "eval/nll" in r]
    assert [r["step"] for r in evals] == [4] and evals[0]["eval/examples"] == 12
    # masked-token NLL of a barely trained model: near log(64) (uniform over the 64 codes)
    assert 0.5 * np.log(64) < evals[0]["eval/nll"] < 2 * np.log(64)
    assert 0.0 <= evals[0]["eval/accuracy"] <= 1.0
    for key in ("loss/loss", "loss/accuracy", "loss/mask_rate", "train/learning_rate",
                "train/grad_norm", "perf/steps_per_s", "perf/images_per_s"):
        assert key in last and np.isfinite(last[key]), key
    assert 0.0 < last["loss/mask_rate"] <= 1.0 and last["train/skipped_steps"] == 0.0
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["num_classes"] == 10 and config["dataset"]["image_size"] == 16
    grid = np.asarray(Image.open(workdir / "images" / "samples_00000004.png"))
    assert grid.ndim == 3 and grid.shape[0] > 16  # 10 labels x 16px
    assert list((workdir / "tensorboard").iterdir())


def test_sample_cli_writes_pngs_and_tokens(maskgit_run, tmp_path, capsys):
    from vqjax.sampling.grids import sample_grids

    workdir, _ = maskgit_run
    out = tmp_path / "samples"
    result = sample_grids(str(workdir), str(out), labels=[1, 7], num_per_label=3,
                               num_steps=4, guidance_scale=1.5)
    assert result["step"] == 4 and result["images_per_s"] > 0
    for label in (1, 7):
        tokens = np.load(out / f"label_{label}_tokens.npy")
        assert tokens.shape == (3, 4, 4) and tokens.dtype == np.int32
        assert tokens.min() >= 0 and tokens.max() < 64  # no mask ids left
        png = np.asarray(Image.open(out / f"label_{label}.png"))
        assert png.shape[-1] == 3
    assert "images/s" in capsys.readouterr().out


def test_resume_continues_from_the_checkpoint(maskgit_run, data_dir, tokenizer_workdir, tmp_path):
    import shutil

    workdir, _ = maskgit_run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    config = maskgit_micro(data_dir, tokenizer_workdir, total_steps=6, image_every_steps=100)
    maskgit_train.train_and_evaluate(config, str(resumed))
    steps = [r["step"] for r in read_metrics(resumed) if "loss/loss" in r]
    assert steps == [2, 4, 6]  # the new run logged only step 6: it started at 4
    assert 6 in [int(p.name) for p in (resumed / "checkpoints").iterdir()]
    from vqjax.train import checkpoint as ckpt_lib

    checkpointer = ckpt_lib.Checkpointer(resumed, read_only=True, async_save=False)
    assert checkpointer.restore_config(6)["total_steps"] == 6
    checkpointer.close()


def test_missing_tokenizer_workdir_is_a_clear_error(data_dir, tmp_path):
    config = maskgit_micro(data_dir, "")
    with pytest.raises(ValueError, match="tokenizer_workdir is required"):
        maskgit_train.train_and_evaluate(config, str(tmp_path / "a"))
    config = maskgit_micro(data_dir, tmp_path / "nothing_here")
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        maskgit_train.train_and_evaluate(config, str(tmp_path / "b"))


# ------------------------------------------------------------------------------------------------
# The step: EMA, gradient accumulation, eval
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def step_setup(data_dir, tokenizer_workdir):
    """A trainer on 8 devices and one global batch of digits (no dropout: deterministic grads)."""
    import jax

    from vqjax import data as data_lib
    from vqjax.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh()
    tokenizer = vqjax.load(str(tokenizer_workdir), mesh=mesh)
    config = maskgit_train.resolve_config(
        maskgit_micro(data_dir, tokenizer_workdir, **{"model.dropout": 0.0}), tokenizer, 10)
    it = data_lib.input_pipeline("vqjax_digits", "train", global_batch_size=16, image_size=16,
                                 data_dir=str(data_dir), crop="center", flip=False)
    local = next(it)
    it.close()
    batch = mesh_lib.global_batch(mesh, {"image": local["image"], "label": local["label"]})
    return config, mesh, tokenizer, batch, jax


def _trainer(setup, **overrides):
    config, mesh, tokenizer, _, _ = setup
    config = apply_overrides(config.copy_and_resolve_references(), overrides)
    return maskgit_train.MaskGITTrainer(config, mesh, tokenizer, 10)


def test_gradient_accumulation_matches_the_full_batch(step_setup):
    _, _, tokenizer, batch, jax = step_setup
    results = []
    for k in (1, 2, 4):
        trainer = _trainer(step_setup, grad_accum_steps=k, batch_size=16)
        params = jax.jit(trainer.init_state)(jax.random.key(0)).params
        grads, metrics = jax.jit(trainer.gradients)(params, tokenizer.variables, batch,
                                                    jax.random.key(3))
        results.append(jax.device_get((grads, metrics)))
    (g1, m1) = results[0]
    for gk, mk in results[1:]:
        for key in ("loss", "accuracy", "mask_rate"):
            np.testing.assert_allclose(mk[key], m1[key], rtol=1e-5, err_msg=key)
        for a, b in zip(jax.tree.leaves(gk), jax.tree.leaves(g1)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
    assert np.abs(jax.tree.leaves(g1)[0]).max() > 0  # a real gradient, not zeros


def test_ema_follows_its_formula_and_zero_decay_is_a_copy(step_setup):
    from vqjax.train.loop import ema_decay_at

    np.testing.assert_allclose([float(ema_decay_at(0.999, t)) for t in (0, 90, 10_000)],
                               [0.1, 0.91, 0.999])
    _, _, tokenizer, batch, jax = step_setup
    for decay in (0.1, 0.9, 0.0):  # 0.1: below the warm-up's 2/11, so the decay itself
        trainer = _trainer(step_setup, ema_decay=decay, batch_size=16)
        step = jax.jit(trainer.train_step)
        state, _ = step(jax.jit(trainer.init_state)(jax.random.key(0)), tokenizer.variables,
                        batch)  # step 0 has learning rate 0 (warmup): take the second
        before = jax.device_get(state.ema_params)
        new, _ = step(state, tokenizer.variables, batch)
        new = jax.device_get(new)
        d = min(decay, (1 + 1) / (10 + 1))  # the warm-up at step 1: 2/11
        for e0, p1, e1 in zip(jax.tree.leaves(before), jax.tree.leaves(new.params),
                              jax.tree.leaves(new.ema_params)):
            np.testing.assert_allclose(e1, d * e0 + (1 - d) * p1, rtol=1e-6, atol=1e-7)
        assert any(np.any(p != e) for p, e in zip(jax.tree.leaves(new.params),
                                                  jax.tree.leaves(before)))
        expected = new.ema_params if decay else new.params
        assert trainer.inference_params(new) is expected


def test_eval_is_deterministic_and_counts_exactly_eval_examples(step_setup):
    _, _, _, _, jax = step_setup
    trainer = _trainer(step_setup, eval_examples=12)
    params = jax.jit(trainer.init_state)(jax.random.key(0)).params
    eval_sums = jax.jit(trainer.eval_sums)
    first = maskgit_train.evaluate(trainer, params, eval_sums)
    second = maskgit_train.evaluate(trainer, params, eval_sums)
    assert first == second and first["eval/examples"] == 12.0
    # an untrained model is close to uniform over the 64 codes
    assert abs(first["eval/nll"] - np.log(64)) < 1.0


# ------------------------------------------------------------------------------------------------
# Preemption, exact resume, other meshes, non-finite steps
# ------------------------------------------------------------------------------------------------
def _final_params(workdir, num_devices=8):
    import jax

    from vqjax.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh(devices=jax.devices()[:num_devices])
    run = vqjax.load(str(workdir), mesh=mesh)
    return run.step, jax.device_get(run.params)


def test_sigterm_saves_and_resume_is_bitwise_identical(data_dir, tokenizer_workdir, tmp_path,
                                                       monkeypatch):
    import signal

    import jax

    from vqjax.train import metrics_writer

    overrides = dict(total_steps=6, image_every_steps=0, eval_every_steps=0, log_every_steps=1,
                     checkpoint_every_steps=4)
    straight = tmp_path / "straight"
    maskgit_train.train_and_evaluate(maskgit_micro(data_dir, tokenizer_workdir, **overrides),
                                     str(straight))

    interrupted = tmp_path / "interrupted"
    original = metrics_writer.MetricWriter.write_scalars

    def preempt_at_step_3(self, step, scalars):
        original(self, step, scalars)
        if step == 3:
            signal.raise_signal(signal.SIGTERM)  # what a preempted VM receives

    monkeypatch.setattr(metrics_writer.MetricWriter, "write_scalars", preempt_at_step_3)
    maskgit_train.train_and_evaluate(maskgit_micro(data_dir, tokenizer_workdir, **overrides),
                                     str(interrupted))
    monkeypatch.setattr(metrics_writer.MetricWriter, "write_scalars", original)
    steps = sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir())
    assert steps == [3]  # stopped after step 3 with a final checkpoint (not at 4)
    assert signal.getsignal(signal.SIGTERM) is not None

    # Resume (same mesh): the state, the data position and the randomness continue exactly.
    # (Restoring onto other meshes: test_checkpoint_restores_bitwise_on_one_device; training on
    # after it is only equal to float rounding, which Adam amplifies for near-zero gradients.)
    maskgit_train.train_and_evaluate(maskgit_micro(data_dir, tokenizer_workdir, **overrides),
                                     str(interrupted))
    step_a, params_a = _final_params(straight)
    step_b, params_b = _final_params(interrupted)
    assert step_a == step_b == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_array_equal(a, b)
    losses = lambda w: {r["step"]: r["loss/loss"] for r in read_metrics(w)  # noqa: E731
                        if "loss/loss" in r}
    la, lb = losses(straight), losses(interrupted)
    assert sorted(la) == sorted(lb) == [1, 2, 3, 4, 5, 6]
    assert [la[s] for s in range(1, 7)] == [lb[s] for s in range(1, 7)]


def test_checkpoint_restores_bitwise_on_one_device_and_trains_on(maskgit_run, data_dir,
                                                                 tokenizer_workdir, tmp_path):
    import shutil

    import jax

    workdir, _ = maskgit_run
    _, eight = _final_params(workdir, 8)
    _, one = _final_params(workdir, 1)
    for a, b in zip(jax.tree.leaves(eight), jax.tree.leaves(one)):
        np.testing.assert_array_equal(a, b)
    # the 8-device run continues on a 2-device mesh
    moved = tmp_path / "moved"
    shutil.copytree(workdir, moved)
    last = maskgit_train.train_and_evaluate(
        maskgit_micro(data_dir, tokenizer_workdir, total_steps=5, log_every_steps=1,
                      image_every_steps=0, eval_every_steps=0, **{"mesh.num_devices": 2}),
        str(moved))
    assert np.isfinite(last["loss/loss"]) and last["train/skipped_steps"] == 0.0
    assert [r["step"] for r in read_metrics(moved) if "loss/loss" in r][-1] == 5


def test_nonfinite_steps_are_skipped_or_stop_the_run(data_dir, tokenizer_workdir, tmp_path):
    from vqjax.train.loop import NonFiniteError

    overrides = {"optimizer.lr": float("nan"), "total_steps": 2, "image_every_steps": 0,
                 "eval_every_steps": 0, "log_every_steps": 1}
    last = maskgit_train.train_and_evaluate(
        maskgit_micro(data_dir, tokenizer_workdir, **overrides), str(tmp_path / "skip"))
    assert last["train/skipped_steps"] == 2.0 and last["train/finite"] == 0.0
    with pytest.raises(NonFiniteError, match="non-finite"):
        maskgit_train.train_and_evaluate(
            maskgit_micro(data_dir, tokenizer_workdir, nonfinite="error", **overrides),
            str(tmp_path / "error"))


# ------------------------------------------------------------------------------------------------
# Pre-encoded token datasets
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, data_dir, tokenizer_workdir):
    out = tmp_path_factory.mktemp("tokens")
    info = tokens_lib.pre_encode(str(tokenizer_workdir), str(out), batch_size=8, limit=20,
                                    data_dir=str(data_dir))
    return out, info


def test_pre_encoded_tokens_equal_on_the_fly_encoding(tokens_dir, data_dir, tokenizer_workdir):
    import jax

    from vqjax import data as data_lib
    from vqjax.data import tokens as tokens_lib
    from vqjax.train import mesh as mesh_lib

    out, info = tokens_dir
    assert info["token_shape"] == [4, 4] and info["dtype"] == "uint16" and info["flip"]
    assert {s: e["num_examples"] for s, e in info["splits"].items()} == {"train": 20,
                                                                          "validation": 20}
    assert tokens_lib.read_info(out)["tokenizer_step"] == 2
    mesh = mesh_lib.make_mesh()
    tokenizer = vqjax.load(str(tokenizer_workdir), mesh=mesh)
    encode = jax.jit(lambda v, x: maskgit_train.encode(tokenizer.model, v, x))
    images_it = data_lib.input_pipeline("vqjax_digits", "validation", global_batch_size=8,
                                        image_size=16, train=False, data_dir=str(data_dir))
    tokens_it = tokens_lib.token_pipeline(out, "validation", global_batch_size=8, train=False)
    for _ in range(2):
        images, tokens = next(images_it), next(tokens_it)
        np.testing.assert_array_equal(tokens["label"], images["label"])
        np.testing.assert_array_equal(tokens["mask"], images["mask"])
        expected = np.asarray(encode(tokenizer.variables, images["image"]))
        np.testing.assert_array_equal(tokens["tokens"], expected)
    images_it.close()
    # the training stream's flip picks the mirror image's tokens for about half the examples
    flipped_it = tokens_lib.token_pipeline(out, "validation", global_batch_size=20, train=False,
                                           flip=True)
    plain_it = tokens_lib.token_pipeline(out, "validation", global_batch_size=20, train=False)
    flipped, plain = next(flipped_it)["tokens"], next(plain_it)["tokens"]
    images_it = data_lib.input_pipeline("vqjax_digits", "validation", global_batch_size=20,
                                        image_size=16, train=False, data_dir=str(data_dir))
    mirrored = np.asarray(encode(tokenizer.variables, next(images_it)["image"][:, :, ::-1]))
    images_it.close()
    changed = np.any(flipped != plain, axis=(1, 2))
    np.testing.assert_array_equal(flipped[changed], mirrored[changed])
    assert 0 < changed.sum() < 20


def test_token_pipeline_is_the_same_at_any_process_count_and_resumes(tokens_dir):
    from vqjax.data import tokens as tokens_lib

    out, _ = tokens_dir
    one = tokens_lib.token_pipeline(out, "train", global_batch_size=8, seed=1, process_index=0,
                                    process_count=1, flip=False)
    halves = [tokens_lib.token_pipeline(out, "train", global_batch_size=8, seed=1, flip=False,
                                        process_index=p, process_count=2) for p in (0, 1)]
    batches = [next(one) for _ in range(4)]  # 32 > 20 examples: crosses an epoch
    for batch in batches:
        parts = [next(h) for h in halves]
        np.testing.assert_array_equal(batch["tokens"],
                                      np.concatenate([p["tokens"] for p in parts]))
        assert "mask" not in batch
    resumed = tokens_lib.token_pipeline(out, "train", global_batch_size=8, seed=1, flip=False)
    resumed.set_state({**one.get_state(), "step": 2})
    np.testing.assert_array_equal(next(resumed)["tokens"], batches[2]["tokens"])
    # the first 20 positions are a shuffle of the 20 records (each once), not their order
    records = lambda b: [(int(l), t.tobytes()) for l, t in zip(b["label"], b["tokens"])]  # noqa
    shuffled = sum((records(b) for b in batches), [])[:20]
    in_order = records(next(tokens_lib.token_pipeline(out, "train", global_batch_size=20,
                                                      train=False)))
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order


def test_maskgit_trains_from_pre_encoded_tokens(tokens_dir, data_dir, tokenizer_workdir,
                                                tmp_path):
    out, _ = tokens_dir
    config = maskgit_micro(data_dir, tokenizer_workdir, tokens_dir=str(out), total_steps=2,
                           image_every_steps=2, eval_every_steps=2, log_every_steps=1)
    last = maskgit_train.train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(last["loss/loss"]) and np.isfinite(last["eval/nll"])
    assert last["eval/examples"] == 12
    assert (tmp_path / "run" / "images" / "samples_00000002.png").exists()


def test_pre_encoded_errors_are_clear(tokens_dir, data_dir, tokenizer_workdir, tmp_path):
    import json
    import shutil

    from vqjax.data import tokens as tokens_lib

    out, _ = tokens_dir
    with pytest.raises(FileNotFoundError, match="launch.encode_tokens"):
        tokens_lib.token_pipeline(tmp_path, "train", global_batch_size=8)
    with pytest.raises(ValueError, match="splits"):
        tokens_lib.token_pipeline(out, "test", global_batch_size=8)
    with pytest.raises(FileExistsError, match="overwrite"):
        tokens_lib.pre_encode(str(tokenizer_workdir), str(out), batch_size=8)
    stale = tmp_path / "stale"
    shutil.copytree(out, stale)
    info = json.loads((stale / "tokens_info.json").read_text())
    info["tokenizer_step"] = 1
    (stale / "tokens_info.json").write_text(json.dumps(info))
    config = maskgit_micro(data_dir, tokenizer_workdir, tokens_dir=str(stale))
    with pytest.raises(ValueError, match="tokenizer step 1"):
        maskgit_train.train_and_evaluate(config, str(tmp_path / "run"))


def test_encode_tokens_cli_with_two_processes(tokenizer_workdir, data_dir, tmp_path, tokens_dir):
    """2 processes (gloo) each encode their slice of every global batch and write their shard;
    the dataset reads back as the 1-process one (same records, in order)."""
    import socket
    import subprocess
    import sys

    from tests.train_utils import REPO, subprocess_env
    from vqjax.data import tokens as tokens_lib

    out = tmp_path / "cli_tokens"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "launch.encode_tokens", f"--tokenizer_workdir={tokenizer_workdir}",
         f"--out={out}", f"--data_dir={data_dir}", "--splits=validation", "--limit=20",
         "--batch_size=8", "--noflip", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=subprocess_env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    assert "validation: 20" in outputs[0][0]
    info = json.loads((out / "tokens_info.json").read_text())
    assert info["flip"] is False and len(info["splits"]["validation"]["files"]) == 2
    # same records as the 1-process dataset (which also holds the mirrored tokens)
    records = lambda d: sorted(  # noqa: E731
        (int(l), t.tobytes()) for l, t in zip(*(lambda b: (b["label"], b["tokens"]))(next(
            tokens_lib.token_pipeline(d, "validation", global_batch_size=20, train=False)))))
    assert records(out) == records(tokens_dir[0])


# ------------------------------------------------------------------------------------------------
# Bits mode (MaskBit) over an lfq tokenizer, end to end
# ------------------------------------------------------------------------------------------------
def test_bits_mode_trains_evaluates_and_samples_over_lfq(data_dir, tmp_path):
    """A 6-bit lfq tokenizer (2 steps) -> a bits-mode MaskGIT with 3 groups of 2 bits (4 steps,
    per-group masking and loss) -> eval per masked group -> launch.sample, MaskBit's guidance."""
    from vqjax.sampling.grids import sample_grids

    tokenizer_dir = tmp_path / "tokenizer_lfq"
    train_tokenizer(micro_config(data_dir, **{
        "dataset.name": "vqjax_digits", "dataset.crop": "center", "total_steps": 2,
        "checkpoint_every_steps": 2, "eval_every_steps": 0, "image_every_steps": 100,
        "log_every_steps": 1, "loss.disc_start_step": 100, "quantizer.name": "lfq",
        "quantizer.lfq.dim": 6}), str(tokenizer_dir))
    workdir = tmp_path / "maskbit"
    last = maskgit_train.train_and_evaluate(maskgit_micro(data_dir, tokenizer_dir, **{
        "model.prediction": "bits", "model.codebook_splits": 3, "masking.schedule": "arccos",
        "image_every_steps": 100}), str(workdir))
    assert np.isfinite(last["loss/loss"]) and 0.0 < last["loss/mask_rate"] <= 1.0
    evals = [r for r in read_metrics(workdir) if "eval/nll" in r]
    # nats per masked 2-bit group: an untrained model is near uniform over its 4 values
    assert abs(evals[-1]["eval/nll"] - np.log(4)) < 0.5 and evals[-1]["eval/examples"] == 12
    params = json.loads((workdir / "config.json").read_text())["model"]
    assert (params["prediction"], params["codebook_splits"]) == ("bits", 3)

    out = tmp_path / "samples"
    result = sample_grids(str(workdir), str(out), labels=[2], num_per_label=3, num_steps=4,
                               guidance_scale=2.0, guidance_base="cond")
    assert result["step"] == 4
    tokens = np.load(out / "label_2_tokens.npy")
    assert tokens.shape == (3, 4, 4) and tokens.dtype == np.int32  # indices, groups combined
    assert tokens.min() >= 0 and tokens.max() < 64
    assert np.asarray(Image.open(out / "label_2.png")).shape[-1] == 3


# ------------------------------------------------------------------------------------------------
# The tokenizer pin (issue 13)
# ------------------------------------------------------------------------------------------------
def _save_perturbed_tokenizer(tokenizer_workdir, from_step, to_step, delta, max_to_keep=3):
    """Saves checkpoint `from_step` of a tokenizer run with every EMA param + `delta` as
    `to_step`: what training on would do to the tokenizer."""
    import jax
    import ml_collections

    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train import mesh as mesh_lib
    from vqjax.train.tokenizer import TokenizerTrainer

    checkpointer = ckpt_lib.Checkpointer(tokenizer_workdir, max_to_keep=max_to_keep,
                                         async_save=False)
    config = ml_collections.ConfigDict(checkpointer.restore_config(from_step))
    mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
    abstract, shardings = TokenizerTrainer(config, mesh).state_shardings()
    state, data_state, saved = checkpointer.restore(from_step,
                                                    ckpt_lib.abstract_like(abstract, shardings))
    state = state.replace(ema_params=jax.tree.map(lambda x: x + delta, state.ema_params),
                          step=state.step * 0 + to_step)
    checkpointer.save(to_step, state, data_state, saved)
    checkpointer.close()


def test_maskgit_is_pinned_to_its_tokenizer_checkpoint(maskgit_run, data_dir, tokenizer_workdir,
                                                       tmp_path, monkeypatch):
    """The tokenizer trains on (a new checkpoint 4); resuming (with a relative
    tokenizer_workdir), sampling and restoring the MaskGIT run keep using tokenizer step 2; the
    tokenizer run keeps step 2 past keep_checkpoints; a step 2 that is gone or differs is
    refused naming it."""
    import json
    import shutil

    import jax

    from vqjax.sampling.grids import sample_grids
    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train import mesh as mesh_lib
    from vqjax.train import pinning, run

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_workdir, tokenizer)
    shutil.rmtree(tokenizer / "pins")  # the markers of the other tests' MaskGIT runs
    _save_perturbed_tokenizer(tokenizer, 2, 4, 0.01)  # the tokenizer trained on
    workdir = tmp_path / "maskgit"
    shutil.copytree(maskgit_run[0], workdir)
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["tokenizer_step"] == 2 and saved["tokenizer_fingerprint"].startswith("config:")

    monkeypatch.chdir(tmp_path)  # relative paths, as typed on a command line
    config = maskgit_micro(data_dir, "tokenizer", total_steps=5, image_every_steps=0,
                           eval_every_steps=0, log_every_steps=1, **{"mesh.num_devices": 1})
    run(config, "maskgit")
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
    resumed = checkpointer.restore_config(5)
    checkpointer.close()
    assert resumed["tokenizer_step"] == 2  # not the tokenizer's latest (4)
    assert resumed["tokenizer_fingerprint"] == saved["tokenizer_fingerprint"]
    assert resumed["tokenizer_workdir"] == str(tokenizer)
    markers = [json.loads(p.read_text()) for p in (tokenizer / "pins").glob("*.json")]
    assert markers == [{"step": 2, "fingerprint": saved["tokenizer_fingerprint"],
                        "workdir": str(workdir)}]
    result = sample_grids("maskgit", "samples", labels=[3], num_per_label=1, num_steps=2)
    assert result["step"] == 5 and (tmp_path / "samples" / "label_3.png").exists()
    mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
    handle = vqjax.load("maskgit", mesh=mesh)
    assert handle.tokenizer.step == 2
    assert handle.tokenizer.fingerprint == saved["tokenizer_fingerprint"]

    # The tokenizer trains on with keep_checkpoints=1: the pinned step 2 stays.
    _save_perturbed_tokenizer(tokenizer, 2, 6, 0.02, max_to_keep=1)
    assert sorted(int(p.name) for p in (tokenizer / "checkpoints").iterdir()) == [2, 6]

    # Gone, then replaced by other params under the same step: refused, naming the step.
    shutil.move(tokenizer / "checkpoints" / "2", tmp_path / "tokenizer_2")
    with pytest.raises(pinning.TokenizerPinError, match=r"pinned to tokenizer checkpoint 2 of "
                                                        rf"{tokenizer}, which is gone"):
        vqjax.load("maskgit", mesh=mesh)
    shutil.copytree(tokenizer / "checkpoints" / "6", tokenizer / "checkpoints" / "2")
    with pytest.raises(pinning.TokenizerPinError, match=r"tokenizer checkpoint 2 of .* is not "
                                                        r"the one .*params hash"):
        vqjax.load("maskgit", mesh=mesh)
    with pytest.raises(pinning.TokenizerPinError, match="params hash"):
        run(maskgit_micro(data_dir, "tokenizer", total_steps=6, **{"mesh.num_devices": 1}),
            "maskgit")


def test_tokenizer_fingerprint_is_the_same_on_host_and_devices(tokenizer_workdir):
    """params_hash gives the same digits whether it hashes on the host or, as on a pod where no
    process sees every shard, on the devices; and any changed bit changes them."""
    import jax
    import numpy as np

    from vqjax import inference
    from vqjax.train import mesh as mesh_lib
    from vqjax.train import pinning

    mesh = mesh_lib.make_mesh()
    tokenizer = inference.load_tokenizer(str(tokenizer_workdir), mesh=mesh)
    host = pinning.params_hash(jax.device_get(tokenizer.variables))
    assert pinning.params_hash(tokenizer.variables) == host
    assert pinning.params_hash(tokenizer.variables, on_devices=True) == host
    flipped = jax.tree.map(np.array, jax.device_get(tokenizer.variables))  # writable copies
    leaf = jax.tree.leaves(flipped)[0]
    leaf.reshape(-1).view(np.uint32)[0] ^= 1
    assert pinning.params_hash(flipped) != host
