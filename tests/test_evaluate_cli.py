"""launch/evaluate.py end to end: micro runs (a tokenizer; a MaskGIT on its tokens) trained
in-process, then evaluated in-process and from the command line (random Inception weights), and
its error messages."""

import json
import math
import sys

import numpy as np
import pytest

from vqjax.evaluation import evaluators as evaluate
from vqjax.evaluation import maskgit_eval
from tests.test_maskgit_train import maskgit_micro
from tests.train_utils import micro_config, run, subprocess_env
from vqjax.train import maskgit as maskgit_train
from vqjax.train.tokenizer import train_and_evaluate

# 2 devices (the checkpoint is written on the suite's 8: restored onto another mesh); one BLAS
# thread, as the 2048x2048 eigendecompositions of the Frechet distance are slower on two threads
# of a busy 2-core machine.
ENV = dict(devices=2, OPENBLAS_NUM_THREADS="1")


def evaluate_command(workdir, *extra):
    return [sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}", *extra]


def test_evaluate_a_trained_run(tmp_path):
    # One test, not a module fixture shared by several: pytest-xdist would train once per worker.
    workdir = tmp_path / "run"
    config = micro_config(tmp_path / "tfds", total_steps=2, checkpoint_every_steps=2,
                          eval_every_steps=0, image_every_steps=100)
    train_and_evaluate(config, str(workdir))

    proc = run(evaluate_command(workdir, "--inception_weights=random", "--num_examples=6",
                                "--batch_size=4"), subprocess_env(**ENV), timeout=300)
    results = json.loads((workdir / "eval_2.json").read_text())
    for key in ("rfid", "psnr", "ssim", "lpips", "usage", "perplexity"):
        assert isinstance(results[key], float) and math.isfinite(results[key]), key
    # The first 6 validation images: a batch of 4 and one of 4 with 2 masked out.
    assert results["examples"] == 6 and results["step"] == 2 and results["params"] == "ema"
    assert results["tokens"] == 6 * 4 * 4  # 16px images, 4x4 patches
    assert 0 < results["usage"] <= 1 and 1 <= results["perplexity"] <= 64
    assert results["rfid"] > 0 and 0 < results["lpips"] and -1 <= results["ssim"] <= 1
    assert results["inception_weights"].startswith("random")
    stats = workdir / "fid_stats" / "vqjax_photos_validation_16px_6_random.npz"
    assert results["reference_stats"] == str(stats) and stats.is_file()
    assert any(p.name.startswith("events") for p in (workdir / "tensorboard").iterdir())
    assert "rfid" in proc.stdout and "eval_2.json" in proc.stdout

    # Missing Inception weights: stops before any work, naming the file and where to get it.
    missing = tmp_path / "nowhere" / "inception.npz"
    proc = run(evaluate_command(workdir, f"--inception_weights={missing}"),
               subprocess_env(**ENV), timeout=120, check=False)
    assert proc.returncode != 0
    assert str(missing) in proc.stderr
    assert "https://github.com/mseitzer/pytorch-fid/releases" in proc.stderr
    assert "python -m launch.convert_inception" in proc.stderr
    assert "--inception_weights=random" in proc.stderr
    assert "Traceback" not in proc.stderr

    # No weights anywhere (a fresh HOME): everything else is computed, rFID is reported skipped
    # with the one command that makes the weights.
    env = subprocess_env(**ENV, HOME=str(tmp_path / "home"))
    env.pop("VQJAX_INCEPTION_WEIGHTS", None)
    proc = run(evaluate_command(workdir, "--num_examples=6", "--batch_size=4"), env, timeout=300)
    results = json.loads((workdir / "eval_2.json").read_text())
    assert "rfid" not in results and "make fid-weights" in results["rfid_skipped"]
    for key in ("psnr", "ssim", "lpips", "usage"):
        assert math.isfinite(results[key]), key
    assert results["inception_weights"] == "none" and results["examples"] == 6
    assert "rfid skipped" in proc.stdout and "make fid-weights" in proc.stdout
    assert "rFID/FID skipped" in proc.stderr  # said at the start, before any work

    with pytest.raises(evaluate.CheckpointNotFoundError, match="available steps: 2"):
        evaluate.find_run(workdir, step=7)


def test_workdir_without_checkpoint_is_a_clear_error(tmp_path):
    proc = run(evaluate_command(tmp_path, "--inception_weights=random"),
               subprocess_env(**ENV), timeout=120, check=False)
    assert proc.returncode != 0
    assert f"no checkpoint in {tmp_path}" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(evaluate.CheckpointNotFoundError, match="no complete checkpoint"):
        evaluate.find_run(tmp_path)
    with pytest.raises(evaluate.CheckpointNotFoundError, match="does not exist"):
        evaluate.find_run(tmp_path / "nope")


# -- MaskGIT: FID / Inception Score of samples ----------------------------------------------------

# Keys that legitimately differ between two evaluations of the same run with the same seed.
TIMINGS = {"seconds", "images_per_s", "reference_seconds", "reference_stats_cached",
           "reference_stats"}


def test_sample_labels_are_class_balanced():
    labels = np.concatenate([maskgit_eval.sample_labels(10, start, 8) for start in (0, 8, 16)])
    np.testing.assert_array_equal(labels, np.arange(24) % 10)
    assert labels.dtype == np.int32
    assert np.ptp(np.bincount(labels[:23], minlength=10)) <= 1  # balanced to one sample
    np.testing.assert_array_equal(maskgit_eval.sample_labels(None, 5, 4), np.zeros(4, np.int32))


def test_reference_batch_features_are_sharded_and_unpadded():
    """ADM reference batches (uint8 arr_0) go through Inception batch-sharded, padded to the
    device count; the padding is dropped."""
    import jax

    from vqjax.evaluation import images_from_uint8
    from vqjax.train import mesh as mesh_lib

    mesh = mesh_lib.make_mesh(devices=jax.local_devices())
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), np.uint8)
    shardings = []

    def features_fn(x):  # a stand-in for Inception: (features, logits)
        shardings.append(x.sharding)
        return x.reshape(x.shape[0], -1)[:, :6] * 2, None

    got = maskgit_eval.uint8_features(features_fn, mesh, images)
    want = np.asarray(images_from_uint8(images)).reshape(5, -1)[:, :6] * 2
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert shardings[0].spec == mesh_lib.batch_sharding(mesh).spec  # 8 rows over 8 devices


def test_evaluate_a_maskgit_run(tmp_path, monkeypatch):
    """FID/IS of 10 samples (batches of 8 on 8 devices: the last one's 6 extras are dropped)
    against 8 validation digits; identical in-process and from the command line (same seed and
    devices); the errors."""
    data_dir = tmp_path / "tfds"
    tokenizer = tmp_path / "tokenizer"
    train_and_evaluate(micro_config(data_dir, **{
        "dataset.name": "vqjax_digits", "dataset.crop": "center", "total_steps": 2,
        "checkpoint_every_steps": 2, "eval_every_steps": 0, "image_every_steps": 100,
        "loss.disc_start_step": 100}), str(tokenizer))
    workdir = tmp_path / "maskgit"
    maskgit_train.train_and_evaluate(maskgit_micro(
        data_dir, tokenizer, total_steps=2, image_every_steps=100, eval_every_steps=0),
        str(workdir))

    flags = dict(num_samples=10, batch_size=8, num_examples=8, is_splits=5, decode_steps=2,
                 guidance_scale=1.5, seed=3)
    results = evaluate.evaluate(workdir, evaluate.EvalOptions(
        inception_weights="random", progress=False, **flags))
    on_disk = json.loads((workdir / "eval_2.json").read_text())
    assert on_disk == results and results["trainer"] == "maskgit"
    assert results["examples"] == 10 and results["step"] == 2 and results["num_classes"] == 10
    assert math.isfinite(results["fid"]) and results["fid"] >= 0
    assert 1 <= results["inception_score"] <= 1008 and results["inception_score_std"] >= 0
    assert results["tokens"] == 10 * 4 * 4 and 0 < results["usage"] <= 1  # 4x4 tokens, 64 codes
    assert 1 <= results["perplexity"] <= 64
    assert (results["num_steps"], results["guidance_scale"], results["seed"]) == (2, 1.5, 3)
    assert results["images_per_s"] > 0 and results["inception_weights"].startswith("random")
    stats = workdir / "fid_stats" / "vqjax_digits_validation_16px_8_random.npz"
    assert results["reference_stats"] == str(stats) and stats.is_file()
    assert results["reference_examples"] == 8 and not results["reference_stats_cached"]
    assert any(p.name.startswith("events") for p in (workdir / "tensorboard").iterdir())

    # The same evaluation from the command line, on as many devices, the reference statistics
    # given as a file: identical numbers.
    given = tmp_path / "given_stats.npz"
    given.write_bytes(stats.read_bytes())
    proc = run(evaluate_command(workdir, "--inception_weights=random", f"--reference_stats={given}",
                                *(f"--{key}={value}" for key, value in flags.items())),
               subprocess_env(devices=8, OPENBLAS_NUM_THREADS="1"), timeout=300)
    again = json.loads((workdir / "eval_2.json").read_text())
    assert again["reference_stats_cached"] and again["reference_stats"] == str(given)
    # Same samples and features; the float64 host statistics may differ in the last digits
    # (BLAS threads sum in another order in the subprocess), hence approx for floats.
    expected = {k: v for k, v in results.items() if k not in TIMINGS}
    got = {k: v for k, v in again.items() if k not in TIMINGS}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-7), key
        else:
            assert got[key] == value, key
    assert "images/s" in proc.stdout and "eval_2.json" in proc.stdout

    # Errors: a missing step, a trainer without an evaluator, options that do not apply.
    with pytest.raises(evaluate.CheckpointNotFoundError, match="available steps: 2"):
        evaluate.evaluate(workdir, evaluate.EvalOptions(step=7, inception_weights="random"))
    monkeypatch.delitem(evaluate.EVALUATORS, "maskgit")
    with pytest.raises(evaluate.UnsupportedRunError, match="config.trainer='maskgit'"):
        evaluate.evaluate(workdir, evaluate.EvalOptions(inception_weights="random"))
    monkeypatch.undo()
    with pytest.raises(evaluate.UnsupportedRunError, match="--use_ema=False"):
        evaluate.evaluate_maskgit(evaluate.find_run(workdir), evaluate.EvalOptions(
            use_ema=False), None, "random")
    with pytest.raises(ValueError, match="not a MaskGIT run"):  # a tokenizer run
        evaluate.evaluate_maskgit(evaluate.find_run(tokenizer), evaluate.EvalOptions(), None,
                                  "random")

    # Weights without the classifier (the TF graph's pool3 path, as `make fid-weights` makes):
    # said at the start, FID computed, no Inception Score.
    import jax

    from vqjax.evaluation import inception as inception_lib

    pool3_only = {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in
                  jax.tree_util.tree_leaves_with_path(inception_lib.init_inception_params(0))
                  if path[0].key != "fc"}
    pool3_only.update({"input_scaling/scale": np.float32(127.5 / 128),
                       "input_scaling/offset": np.float32(-0.5 / 128)})
    np.savez(tmp_path / "pool3.npz", **pool3_only)
    messages = []
    monkeypatch.setattr(evaluate.log, "warning", lambda msg, *a: messages.append(msg % a))
    results = evaluate.evaluate(workdir, evaluate.EvalOptions(
        inception_weights=str(tmp_path / "pool3.npz"), progress=False, **flags))
    assert messages and "Inception Score unavailable" in messages[0]
    assert math.isfinite(results["fid"]) and "inception_score" not in results
    assert "no classifier" in results["inception_score_skipped"]
    assert results["reference_stats"].endswith("_8_inception-pool3.npz")

    # No weights at all: the samples' codebook usage only, FID and IS reported skipped.
    monkeypatch.setattr(inception_lib, "DEFAULT_WEIGHTS_PATH", tmp_path / "none" / "a.npz")
    monkeypatch.setattr(inception_lib, "DEFAULT_POOL3_WEIGHTS_PATH", tmp_path / "none" / "b.npz")
    monkeypatch.delenv(inception_lib.WEIGHTS_ENV, raising=False)
    messages.clear()
    results = evaluate.evaluate(workdir, evaluate.EvalOptions(progress=False, **flags))
    assert "make fid-weights" in results["fid_skipped"] and "fid" not in results
    assert "inception_score" not in results and results["inception_weights"] == "none"
    assert results["examples"] == 10 and 0 < results["usage"] <= 1
    assert any("rFID/FID skipped" in m for m in messages)
    printed = evaluate.report(results)  # what `python -m launch.evaluate` prints
    assert "10 samples," in printed and "fid skipped: " in printed and "against" not in printed
