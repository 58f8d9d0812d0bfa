"""Codebooks stay in use: each tiny preset, trained for its default steps on its default dataset,
keeps at least 90% of its codebook in use at its evaluation over the whole eval split, with a PSNR
floor measured on this recipe (docs/quantizers.md, "Codebook usage"). These are the README's main
job and its conv sibling, run in-process exactly as `launch.train` runs them (8 CPU devices).

One preset per test file (the conv preset: test_codebook_usage_vqgan.py), so that the suite's
`--dist loadfile` runs the two longest tests of the suite on different workers."""

import pytest

from configs import vitvqgan, vqgan
from vqjax.train.tokenizer import train_and_evaluate

# Measured eval PSNR of the default recipes on 2 CPU cores (docs/quantizers.md), minus ~0.5 dB.
PSNR_FLOOR = {"vitvqgan": 22.0, "vqgan": 20.5}
PRESETS = {"vitvqgan": vitvqgan, "vqgan": vqgan}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def check_tiny_preset(preset, data_dir, tmp_path):
    config = PRESETS[preset].get_config("tiny")
    config.dataset.data_dir = str(data_dir)
    config.checkpoint_every_steps = config.total_steps  # one checkpoint: the test is about training
    config.image_every_steps = config.total_steps
    config.eval_every_steps = config.total_steps
    metrics = train_and_evaluate(config, str(tmp_path / preset))
    assert metrics["eval/examples"] >= 100  # the whole eval split of vqjax_photos (110 images)
    assert metrics["eval/usage"] >= 0.9, metrics
    assert metrics["eval/psnr"] >= PSNR_FLOOR[preset], metrics


@pytest.mark.slow
def test_tiny_vitvqgan_keeps_its_codebook_in_use(data_dir, tmp_path):
    check_tiny_preset("vitvqgan", data_dir, tmp_path)
