"""The README's path as a new user walks it: every CLI run from a copy of the repository, with
relative paths (workdirs, data_dir, outputs), as the README and the end-of-run summary print them.

train (summary) -> rerun says it is finished; evaluate (no FID weights: everything but rFID);
encode_tokens; MaskGIT on those tokens; sample.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train_utils import REPO

pytestmark = pytest.mark.slow

TRAIN = ["--config=configs/vitvqgan.py:tiny,res=16", "--workdir=runs/tok",
         "--config.dataset.data_dir=data", "--config.batch_size=8", "--config.total_steps=6",
         "--config.log_every_steps=1", "--config.checkpoint_every_steps=3",
         "--config.eval_every_steps=6", "--config.eval_examples=8",
         "--config.image_every_steps=6", "--config.optimizer.warmup_steps=2",
         "--config.loss.disc_start_step=2", "--config.discriminator.channel_multipliers=(1,2)",
         "--config.quantizer.vq.codebook_size=64"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The repository's files (tracked and not ignored), as a fresh clone has them."""
    dest = tmp_path_factory.mktemp("clone") / "vqjax"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def env(clone):
    # A new user's HOME: no FID weights in ~/.cache/vqjax, no datasets in ~/tensorflow_datasets.
    out = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VQJAX_INCEPTION_WEIGHTS", "TFDS_DATA_DIR")}
    out["HOME"] = str(clone.parent / "home")
    out["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    out["JAX_PLATFORMS"] = "cpu"
    return out


def cli(clone, module, *args, timeout=600, check=True):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=clone, env=env(clone),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(clone):
    """The README's command, then the same command again (Ctrl-C and resume with a relative
    workdir: tests/test_resilience.py)."""
    first = cli(clone, "launch.train", *TRAIN)
    again = cli(clone, "launch.train", *TRAIN)
    return first, again


def test_train_prints_a_summary_and_rerun_says_finished(clone, trained):
    first, again = trained
    assert "starting from scratch" in first.stdout
    summary = first.stdout.split("vqjax: runs/tok")[-1]
    assert "at step 6 of 6" in summary
    assert "images:      runs/tok/images/reconstructions_00000006.png" in summary
    assert "tensorboard --logdir=runs/tok/tensorboard" in summary
    assert "python -m launch.evaluate --workdir=runs/tok" in summary
    assert str(clone) not in summary  # paths as the user typed them
    assert "finished" in again.stdout.lower() and "6" in again.stdout
    assert sorted(p.name for p in (clone / "runs" / "tok" / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["3", "6"]
    from PIL import Image

    image = clone / "runs" / "tok" / "images" / "reconstructions_00000006.png"
    assert Image.open(image).size[0] >= 512
    assert (clone / "data" / "vqjax_photos").is_dir()  # the relative data_dir, under the clone


def test_evaluate_without_fid_weights(clone, trained):
    proc = cli(clone, "launch.evaluate", "--workdir=runs/tok", "--lpips=false")
    results = json.loads((clone / "runs" / "tok" / "eval_6.json").read_text())
    assert results["psnr"] > 0 and 0 < results["usage"] <= 1
    assert "rfid" not in results or results["rfid"] is None
    assert "make fid-weights" in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tokens(clone, trained):
    cli(clone, "launch.encode_tokens", "--tokenizer_workdir=runs/tok", "--out=tokens",
        "--limit=32", "--batch_size=8")
    return clone / "tokens"


def test_encode_tokens_then_maskgit_then_sample(clone, tokens):
    assert (tokens / "tokens_info.json").exists()
    cli(clone, "launch.train", "--config=configs/maskgit.py:tiny,dataset=vqjax_photos",
        "--workdir=runs/mg", "--config.tokenizer_workdir=runs/tok", "--config.tokens_dir=tokens",
        "--config.batch_size=8", "--config.total_steps=2", "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=2", "--config.eval_every_steps=0",
        "--config.image_every_steps=100")
    config = json.loads((clone / "runs" / "mg" / "config.json").read_text())
    assert config["tokenizer_workdir"] == str((clone / "runs" / "tok").resolve())
    cli(clone, "launch.sample", "--workdir=runs/mg", "--out=samples", "--num_per_label=2",
        "--steps=2")
    assert list((clone / "samples").glob("*.png")) and list((clone / "samples").glob("*.npy"))
