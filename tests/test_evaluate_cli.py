"""launch/evaluate.py end to end: a micro run trained in-process, then evaluated from the command
line (random Inception weights), and its error messages."""

import json
import math
import sys

import pytest

from launch import evaluate
from tests.train_utils import micro_config, run, subprocess_env
from vqjax.train.tokenizer import train_and_evaluate

# 2 devices (the checkpoint is written on the suite's 8: restored onto another mesh); one BLAS
# thread, as the 2048x2048 sqrtm of the Frechet distance is slower on two threads of a busy
# 2-core machine.
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
