"""The MaskGIT trainer end to end on the labelled built-in digits: a micro tokenizer run -> a micro
MaskGIT run -> launch.sample; resume; a clear error without a tokenizer."""

import json

import numpy as np
import pytest
from PIL import Image

from configs import maskgit as maskgit_config
from tests.train_utils import micro_config, read_metrics
from vqjax.train import maskgit as maskgit_train
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
    for key, value in overrides.items():
        target = c
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return c


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
    from launch import sample as sample_cli

    workdir, _ = maskgit_run
    out = tmp_path / "samples"
    result = sample_cli.sample(str(workdir), str(out), labels=[1, 7], num_per_label=3,
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
