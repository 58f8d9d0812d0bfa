"""Runs saved by older vqjax still restore: `tests/data/compat` holds a tiny ViT-VQGAN run and a
MaskGIT run on it, written by commit 21aa580 (before the issue-14 refactor), and the outputs
`vqjax.load` gave for them then (`make_fixture.py` says how). Today's code must restore them for
inference with the same outputs, and resume training them.

A failure here means a change renamed a parameter, a TrainState field or a checkpoint item: add
a migration (or keep the old name), never regenerate the fixture to make this pass."""

import json
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

import vqjax

FIXTURE = Path(__file__).parent / "data" / "compat"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A copy of the fixture runs, the MaskGIT run pointing at the copied tokenizer (as a user
    who moved both would set it)."""
    root = tmp_path_factory.mktemp("compat")
    for name in ("tokenizer", "maskgit"):
        shutil.copytree(FIXTURE / name, root / name)
    config_path = root / "maskgit" / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_workdir"] = str(root / "tokenizer")
    config_path.write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURE / "expected.npz") as data:
        return {key: data[key] for key in data.files}


def test_old_tokenizer_run_gives_its_old_outputs(runs, expected):
    tokenizer = vqjax.load(str(runs / "tokenizer"))
    assert tokenizer.step == 2
    indices = np.asarray(tokenizer.encode(expected["images"]))
    np.testing.assert_array_equal(indices, expected["tokenizer/indices"])
    np.testing.assert_allclose(np.asarray(tokenizer.decode(indices)),
                               expected["tokenizer/decoded"], atol=1e-5)
    live = vqjax.load(str(runs / "tokenizer"), use_ema=False)
    np.testing.assert_allclose(np.asarray(live.decode(indices)),
                               expected["tokenizer/live_decoded"], atol=1e-5)
    # EMA and live params differ after 2 steps: the test would notice them swapped.
    assert np.abs(expected["tokenizer/decoded"] - expected["tokenizer/live_decoded"]).max() > 1e-4


def test_old_maskgit_run_gives_its_old_logits_and_samples(runs, expected):
    maskgit = vqjax.load(str(runs / "maskgit"))
    assert maskgit.step == 2
    labels = expected["maskgit/labels"] if maskgit.num_classes else None
    logits = np.asarray(maskgit.logits(expected["maskgit/tokens"], labels))
    np.testing.assert_allclose(logits, expected["maskgit/logits"], atol=1e-5, rtol=1e-5)
    samples = np.asarray(maskgit.sample(labels, jax.random.key(2), num_steps=4))
    np.testing.assert_allclose(samples, expected["maskgit/samples"], atol=1e-4)


def test_old_tokenizer_run_resumes_training(runs, tmp_path):
    """The whole TrainState (optimizers, discriminator, EMA, quantizer state) restores and trains
    on: one more step from the old checkpoint."""
    from vqjax.train.tokenizer import train_and_evaluate

    workdir = tmp_path / "tokenizer"
    shutil.copytree(runs / "tokenizer", workdir)
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    config.total_steps = 3
    config.checkpoint_every_steps = 3
    config.dataset.data_dir = str(tmp_path / "data")
    train_and_evaluate(config, str(workdir))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [2, 3]
