"""Writes tests/data/compat: a tokenizer run and a MaskGIT run on it, saved by vqjax as of commit 21aa580 (before the issue-14
refactor), and the outputs `vqjax.load` gave for them then. tests/test_checkpoint_compat.py checks
that today's code restores these runs and reproduces those outputs.

    python tests/data/compat/make_fixture.py   # from the repository root; rewrites the fixture

Do not rerun it to "fix" a failing compatibility test: the point of the fixture is that it was
written by older code. Rerun only to add a new format generation, and keep the old one.
"""

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import vqjax  # noqa: E402
from configs import maskgit as maskgit_config  # noqa: E402
from train_utils import apply_overrides, micro_config  # noqa: E402
from vqjax.train import maskgit as maskgit_train  # noqa: E402
from vqjax.train import tokenizer as tokenizer_train  # noqa: E402

OUT = REPO / "tests" / "data" / "compat"
RUN_FIELDS = {"dataset.name": "vqjax_digits", "dataset.crop": "center", "total_steps": 2,
              "checkpoint_every_steps": 2, "eval_every_steps": 0, "image_every_steps": 100,
              "log_every_steps": 1, "loss.disc_start_step": 1, "batch_size": 8}


def strip(workdir: Path) -> None:
    """Keeps what a restore reads: config.json and checkpoints/ (no logs, images, metrics)."""
    for path in workdir.iterdir():
        if path.name not in ("config.json", "checkpoints"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def main() -> None:
    data_dir = Path("/tmp/vqjax_compat_data")
    for name in ("tokenizer", "maskgit"):
        shutil.rmtree(OUT / name, ignore_errors=True)

    # The tiny ViT-VQGAN at 16 px (4x4 tokens of a 64-code vq), 2 steps with the discriminator on.
    # (A conv VQGAN run would add 12 MB; its parameter names are pinned by the MaskGIT converter's
    # fixture instead.)
    vit = micro_config(data_dir, **RUN_FIELDS)
    tokenizer_train.train_and_evaluate(vit, str(OUT / "tokenizer"))

    mg = maskgit_config.get_config("tiny")
    mg.tokenizer_workdir = str(OUT / "tokenizer")
    mg.dataset.data_dir = str(data_dir)
    apply_overrides(mg, {
        "dataset.name": "vqjax_digits", "batch_size": 8, "total_steps": 2,
        "checkpoint_every_steps": 2, "log_every_steps": 1, "image_every_steps": 100,
        "eval_every_steps": 0, "optimizer.warmup_steps": 1})
    maskgit_train.train_and_evaluate(mg, str(OUT / "maskgit"))

    # The outputs of today's `vqjax.load` on fixed inputs.
    images = np.asarray(jax.random.uniform(jax.random.key(1), (4, 16, 16, 3), minval=-1, maxval=1))
    expected = {"images": images}
    for name in ("tokenizer",):
        tok = vqjax.load(str(OUT / name))
        indices = tok.encode(images)
        expected[f"{name}/indices"] = np.asarray(indices)
        expected[f"{name}/decoded"] = np.asarray(tok.decode(indices))
        live = vqjax.load(str(OUT / name), use_ema=False)
        expected[f"{name}/live_decoded"] = np.asarray(live.decode(indices))
    mgit = vqjax.load(str(OUT / "maskgit"))
    tokens = np.asarray(expected["tokenizer/indices"]).copy()
    tokens[:, ::2, 1::2] = mgit.mask_token_id
    labels = np.arange(4, dtype=np.int32) % max(mgit.num_classes or 1, 1)
    expected["maskgit/tokens"] = tokens
    expected["maskgit/labels"] = labels
    expected["maskgit/logits"] = np.asarray(mgit.logits(tokens, labels if mgit.num_classes else None))
    expected["maskgit/samples"] = np.asarray(mgit.sample(
        labels if mgit.num_classes else None, jax.random.key(2), num_steps=4))
    for name in ("tokenizer", "maskgit"):
        strip(OUT / name)
    np.savez_compressed(OUT / "expected.npz", **expected)
    print({k: v.shape for k, v in expected.items()})


if __name__ == "__main__":
    main()
