"""Shared helpers for the training tests: a micro config and reading a run's outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from configs import vitvqgan

REPO = Path(__file__).resolve().parent.parent


def micro_config(data_dir, **overrides):
    """The tiny ViT-VQGAN at 16px, batch 8: a few seconds per step on 2 CPU cores."""
    c = vitvqgan.get_config("tiny,res=16")
    c.dataset.data_dir = str(data_dir)
    c.batch_size = 8
    c.total_steps = 6
    c.log_every_steps = 2
    c.checkpoint_every_steps = 3
    c.eval_every_steps = 6
    c.eval_examples = 6  # not a multiple of the batch: the last eval batch is partly masked
    c.image_every_steps = 6
    c.optimizer.warmup_steps = 2
    c.loss.disc_start_step = 2
    c.discriminator.channel_multipliers = (1, 2)
    c.quantizer.vq.codebook_size = 64
    return apply_overrides(c, overrides)


def apply_overrides(config, overrides):
    """Sets dotted fields ("optimizer.lr": 1e-3) of a ConfigDict in place; returns it."""
    for key, value in overrides.items():
        target = config
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    return config


def read_metrics(workdir):
    lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def train_losses(workdir):
    return {m["step"]: m["loss/loss"] for m in read_metrics(workdir) if "loss/loss" in m}


def launch_command(workdir, data_dir, *extra):
    return [sys.executable, "-m", "launch.train", "--config=configs/vitvqgan.py:tiny,res=16",
            f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
            "--config.batch_size=8", "--config.log_every_steps=2", "--config.eval_every_steps=0",
            "--config.image_every_steps=1000", "--config.optimizer.warmup_steps=2",
            "--config.loss.disc_start_step=2", "--config.discriminator.channel_multipliers=(1,2)",
            "--config.quantizer.vq.codebook_size=64", *extra]


def subprocess_env(devices=8, **extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run(cmd, env, timeout=600, check=True):
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def final_params(workdir, step):
    """The params of checkpoint `step` as numpy arrays (restored on the host)."""
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "state"
    restored = ocp.StandardCheckpointer().restore(path)
    return {k: np.asarray(v) for k, v in _flatten(restored["params"]).items()}


def _flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out
