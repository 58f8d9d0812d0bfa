"""The tokenizer trainer end to end: outputs, restore onto other meshes, kill-and-resume, multi-host,
non-finite steps, bad configs."""

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train_utils import (REPO, final_params, launch_command, micro_config, read_metrics, run,
                               subprocess_env, train_losses)
from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import mesh as mesh_lib
from vqjax.train import validate
from vqjax.train.tokenizer import NonFiniteError, TokenizerTrainer, train_and_evaluate


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def eight_device_run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("run8")
    metrics = train_and_evaluate(micro_config(data_dir), str(workdir))
    return workdir, metrics


def test_end_to_end_outputs(eight_device_run):
    workdir, last = eight_device_run
    records = read_metrics(workdir)
    steps = [r["step"] for r in records if "loss/loss" in r]
    assert steps == [2, 4, 6]
    for key in ("loss/l2", "loss/generator_gan", "loss/quantizer", "disc/discriminator_gan",
                "quantizer/usage", "quantizer/perplexity", "quantizer/dead_codes",
                "train/grad_norm", "train/learning_rate", "perf/images_per_s", "perf/mfu",
                "perf/steps_per_s", "data/skipped_examples"):
        assert key in last and np.isfinite(last[key]), key
    assert last["loss/adversarial_weight"] == pytest.approx(0.1)  # discriminator started at 2
    evals = [r for r in records if "eval/psnr" in r]
    assert evals and evals[-1]["step"] == 6 and evals[-1]["eval/examples"] == 6
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [3, 6]
    assert (workdir / "config.json").exists()
    assert list((workdir / "images").glob("reconstructions_00000006.png"))
    assert list((workdir / "tensorboard").iterdir())


@pytest.mark.parametrize("num_devices,fsdp", [(1, 1), (8, 2), (4, 4)])
def test_restore_onto_another_mesh(eight_device_run, data_dir, num_devices, fsdp):
    workdir, _ = eight_device_run
    config = micro_config(data_dir)
    reference = final_params(workdir, 6)
    mesh = mesh_lib.make_mesh(fsdp=fsdp, devices=jax.devices()[:num_devices])
    trainer = TokenizerTrainer(config, mesh)
    abstract, shardings = trainer.state_shardings()
    state, data_state, saved_config = ckpt_lib.Checkpointer(workdir, read_only=True).restore(
        None, ckpt_lib.abstract_like(abstract, shardings))
    assert int(state.step) == 6 and data_state["step"] == 6
    assert saved_config["quantizer"]["vq"]["codebook_size"] == 64
    leaves = jax.tree_util.tree_leaves_with_path(state.params)
    assert len(leaves) == len(reference)
    for path, leaf in leaves:
        assert len(leaf.sharding.device_set) == num_devices
        name = "/" + mesh_lib.path_string(path)
        np.testing.assert_array_equal(np.asarray(leaf), reference[name], err_msg=name)


def test_nonfinite_steps_are_skipped_or_stop_the_run(data_dir, tmp_path):
    config = micro_config(data_dir, **{"optimizer.lr": float("nan"), "total_steps": 4,
                                       "eval_every_steps": 0, "image_every_steps": 100,
                                       "mesh.num_devices": 1})
    metrics = train_and_evaluate(config, str(tmp_path / "skip"))
    assert metrics["train/skipped_steps"] == 4.0 and metrics["train/finite"] == 0.0
    with pytest.raises(NonFiniteError, match="nonfinite"):
        config.nonfinite = "error"
        train_and_evaluate(config, str(tmp_path / "error"))


def test_missing_dataset_is_a_clear_error(data_dir, tmp_path):
    config = micro_config(data_dir, **{"dataset.name": "no_such_dataset", "mesh.num_devices": 1})
    with pytest.raises(Exception, match="no_such_dataset"):
        train_and_evaluate(config, str(tmp_path / "missing"))


def test_bad_config_field_is_an_error_naming_it(tmp_path):
    proc = run(launch_command(tmp_path / "bad", tmp_path, "--config.optimizer.lrr=1"),
               subprocess_env(devices=1), timeout=120, check=False)
    assert proc.returncode != 0
    assert "lrr" in proc.stderr and "Did you mean" in proc.stderr


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume_is_bitwise_identical(data_dir, tmp_path):
    """Uninterrupted run vs. a run stopped by SIGTERM (final save) and later SIGKILLed at a random
    moment, each time resumed with the same command: identical parameters at the last step."""
    steps = ["--config.total_steps=10", "--config.checkpoint_every_steps=4"]
    env = subprocess_env(devices=2)
    straight = tmp_path / "straight"
    run(launch_command(straight, data_dir, *steps), env)

    interrupted = tmp_path / "interrupted"
    cmd = launch_command(interrupted, data_dir, *steps)

    def start_and_signal(sig, when):
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 300
        while not when() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        if proc.poll() is None:
            time.sleep(random.uniform(0.0, 1.5))
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        return proc.returncode, err

    metrics_file = interrupted / "metrics.jsonl"
    # SIGTERM once training has logged: the run saves a checkpoint where it stands and exits.
    code, err = start_and_signal(signal.SIGTERM, lambda: metrics_file.exists()
                                 and metrics_file.stat().st_size > 0)
    assert code == 0, err[-3000:]
    saved = sorted(int(p.name) for p in (interrupted / "checkpoints").iterdir()
                   if p.name.isdigit())
    assert saved and saved[-1] < 10
    # SIGKILL at a random moment after the next checkpoint starts being written.
    code, _ = start_and_signal(signal.SIGKILL, lambda: any(
        p.name.startswith(("8", "4")) and int(p.name.split(".")[0]) > saved[-1]
        for p in (interrupted / "checkpoints").iterdir()))
    run(cmd, env)  # the same command resumes and finishes
    reference, resumed = final_params(straight, 10), final_params(interrupted, 10)
    assert reference.keys() == resumed.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(data_dir, tmp_path):
    """2 processes x 2 CPU devices (gloo) vs 1 process x 4 devices, same global batch."""
    steps = ["--config.total_steps=4", "--config.checkpoint_every_steps=4",
             "--config.eval_every_steps=4", "--config.image_every_steps=4"]
    single = tmp_path / "single"
    run(launch_command(single, data_dir, *steps), subprocess_env(devices=4))

    multi = tmp_path / "multi"
    port = _free_port()
    procs = [
        subprocess.Popen(
            launch_command(multi, data_dir, *steps, f"--coordinator_address=127.0.0.1:{port}",
                           "--num_processes=2", f"--process_id={i}"),
            cwd=REPO, env=subprocess_env(devices=2), stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-4000:]
    expected, got = train_losses(single), train_losses(multi)
    assert sorted(got) == sorted(expected) == [2, 4]
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4, abs=1e-6), step
    # Only process 0 writes logs; eval over the global eval batch agrees too.
    assert len(read_metrics(multi)) == len(read_metrics(single))
    eval_single = [r for r in read_metrics(single) if "eval/psnr" in r][-1]
    eval_multi = [r for r in read_metrics(multi) if "eval/psnr" in r][-1]
    for key in ("eval/psnr", "eval/usage", "eval/examples"):
        assert eval_multi[key] == pytest.approx(eval_single[key], rel=1e-4), key
    assert len(list((multi / "images").glob("*.png"))) == 1


def test_gradient_accumulation_matches_full_batch(data_dir):
    """With a stateless quantizer (fsq) and no batch-coupled terms (no GAN), accumulating two
    micro-batches gives the full batch's gradient, so the updated params agree."""
    overrides = {"quantizer.name": "fsq", "loss.adversarial_weight": 0.0}
    results = []
    for accum in (1, 2):
        config = micro_config(data_dir, grad_accum_steps=accum, **overrides)
        mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
        trainer = TokenizerTrainer(config, mesh)
        state = jax.jit(trainer.init_state)(jax.random.key(0))
        images = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3), minval=-1.0, maxval=1.0)
        new_state, metrics = jax.jit(trainer.train_step)(state, {"image": images})
        results.append((new_state, metrics))
    (one, m1), (two, m2) = results
    assert float(m1["train/finite"]) == float(m2["train/finite"]) == 1.0
    np.testing.assert_allclose(float(m1["train/grad_norm"]), float(m2["train/grad_norm"]),
                               rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                                                         atol=1e-6), one.params, two.params)
    with pytest.raises(ValueError, match="grad_accum_steps=3"):
        validate.check_config(micro_config(data_dir, grad_accum_steps=3))
