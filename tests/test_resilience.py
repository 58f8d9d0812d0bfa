"""Runs survive faults and mistakes (issue 13): interrupts save, damaged checkpoints fall back,
metrics are rewound, configs are checked (at start and against the saved one on resume), the disk
running full is reported in one line, and the workdir may be relative. One test per case; the
command-line cases share one scenario of three `launch.train` processes on one CPU device."""

import json
import logging
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from configs import vqgan
from tests.train_utils import REPO, apply_overrides, micro_config, read_metrics, subprocess_env
from vqjax.train import checkpoint as ckpt_lib
from vqjax.train import loop, run
from vqjax.train import mesh as mesh_lib
from vqjax.train.tokenizer import TokenizerTrainer
from vqjax.train.validate import ConfigError

ONE_DEVICE = {"mesh.num_devices": 1, "eval_every_steps": 0, "image_every_steps": 0,
              "log_every_steps": 1, "checkpoint_every_steps": 2, "total_steps": 4}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def config_for(data_dir, **overrides):
    return micro_config(data_dir, **{**ONE_DEVICE, **overrides})


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data_dir):
    """Four steps of the micro tokenizer on one device, checkpoints at 2 and 4."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    run(config_for(data_dir), str(workdir))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4]
    return workdir


def copy_of(base_run, tmp_path, name="run"):
    target = tmp_path / name
    shutil.copytree(base_run, target)
    return target


def steps_in(workdir):
    return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir()
                  if p.name.isdigit())


def restorer(workdir, data_dir):
    """(Checkpointer, abstract state on one device) for a micro run's workdir."""
    config = config_for(data_dir)
    mesh = mesh_lib.make_mesh(devices=jax.devices()[:1])
    abstract, shardings = TokenizerTrainer(config, mesh).state_shardings()
    return (ckpt_lib.Checkpointer(workdir, async_save=False),
            ckpt_lib.abstract_like(abstract, shardings))


# ------------------------------------------------------------------------------------------------
# The command line, from another folder with a relative --workdir
# ------------------------------------------------------------------------------------------------
def cli(*extra):
    return [sys.executable, "-m", "launch.train",
            f"--config={REPO}/configs/vitvqgan.py:tiny,res=16", "--workdir=runs/tok",
            "--config.batch_size=8", "--config.log_every_steps=1", "--config.eval_every_steps=0",
            "--config.image_every_steps=0", "--config.optimizer.warmup_steps=2",
            "--config.loss.disc_start_step=2", "--config.discriminator.channel_multipliers=(1,2)",
            "--config.quantizer.vq.codebook_size=64", "--config.checkpoint_every_steps=2",
            "--config.keep_checkpoints=100", *extra]


def start_and_interrupt(cmd, cwd, env, when, presses):
    """Starts `cmd`; once `when()` holds, sends SIGINT, and for a second press waits until the
    run has reported the first (signals that arrive together are delivered once)."""
    err_path = Path(cwd) / f"stderr_{time.monotonic_ns()}.txt"
    with open(err_path, "w") as err_file:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err_file,
                                text=True)
        deadline = time.time() + 300
        while not when() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        for press in range(presses):
            while press and "SIGINT: saving" not in err_path.read_text() and \
                    proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    return proc.returncode, out, err_path.read_text()


@pytest.fixture(scope="module")
def cli_scenario(tmp_path_factory, data_dir):
    """1. a run of 1000 steps, Ctrl-C once after checkpoint 4; 2. the same command resumes, and
    gets two Ctrl-C after its next checkpoint; 3. `--step=2 --config.total_steps=3` finishes."""
    cwd = tmp_path_factory.mktemp("cli")
    workdir = cwd / "runs" / "tok"
    env = subprocess_env(devices=1)
    long = cli("--config.total_steps=1000", f"--config.dataset.data_dir={data_dir}")
    first = start_and_interrupt(long, cwd, env, lambda: 4 in steps_in_safe(workdir), presses=1)
    after_first = steps_in(workdir)
    second = start_and_interrupt(long, cwd, env,
                                 lambda: max(steps_in_safe(workdir) or [0]) > after_first[-1],
                                 presses=2)
    after_second = cwd / "after_second"
    shutil.copytree(workdir, after_second)
    third = subprocess.run(cli("--step=2", "--config.total_steps=3",
                               f"--config.dataset.data_dir={data_dir}"),
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return dict(cwd=cwd, workdir=workdir, first=first, after_first=after_first, second=second,
                after_second=after_second,
                third=(third.returncode, third.stdout, third.stderr))


def steps_in_safe(workdir):
    try:
        return steps_in(workdir)
    except FileNotFoundError:
        return []


def test_relative_workdir_saves_resumes_and_finishes(cli_scenario):
    workdir = cli_scenario["workdir"]
    code, out, err = cli_scenario["third"]
    assert code == 0, err[-3000:]
    assert steps_in(workdir) == [2, 3]  # saved under <cwd>/runs/tok, resumed from there
    assert json.loads((workdir / "config.json").read_text())["total_steps"] == 3


def test_ctrl_c_saves_and_a_second_ctrl_c_aborts_cleanly(cli_scenario, data_dir):
    code, out, err = cli_scenario["first"]
    stopped = cli_scenario["after_first"][-1]
    assert code == 130, err[-3000:]
    assert stopped >= 4 and f"interrupted at step {stopped}: saved checkpoint" in err
    # The second run got two Ctrl-C: it exits at once without finishing that save, and the
    # newest checkpoint it left restores as it is (no fallback).
    code, out, err = cli_scenario["second"]
    assert code == 130 and "aborted: second Ctrl-C" in err, err[-3000:]
    assert "Traceback" not in err
    left = cli_scenario["after_second"]
    checkpointer, abstract = restorer(left, data_dir)
    state, data_state, _, step = checkpointer.restore_with_fallback(abstract)
    checkpointer.close()
    assert step == steps_in(left)[-1] > stopped and int(state.step) == data_state["step"] == step
    assert not (left / "checkpoints_aside").exists()


def test_start_line_says_where_the_run_starts(cli_scenario):
    workdir = cli_scenario["workdir"]
    # (tfds reports on stdout that it built the built-in dataset, on first use only)
    first = [line for line in cli_scenario["first"][1].splitlines()
             if not line.startswith(("Downloading and preparing", "Dataset vqjax_photos"))]
    assert first == ["starting from scratch"]
    stopped = cli_scenario["after_first"][-1]
    assert cli_scenario["second"][1] == (f"resumed from step {stopped} "
                                         f"(checkpoint {workdir}/checkpoints/{stopped})\n")
    third = cli_scenario["third"][1].splitlines()
    assert third[0] == f"resumed from step 2 (checkpoint {workdir}/checkpoints/2)"
    assert third[1].startswith("vqjax: runs/tok at step 3 of 3")  # the end-of-run summary


def test_step_flag_resumes_a_chosen_checkpoint_and_keeps_the_later_ones(cli_scenario):
    workdir = cli_scenario["workdir"]
    later = [s for s in steps_in(cli_scenario["after_second"]) if s > 2]
    assert later
    aside = sorted(p.name for p in (workdir / "checkpoints_aside").iterdir())
    assert aside == sorted(f"{s}.after_2" for s in later)


def test_metrics_are_rewound_to_the_restored_step(cli_scenario):
    workdir = cli_scenario["workdir"]
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]
    rewound = [json.loads(line)["step"]
               for line in (workdir / "metrics_rewound.jsonl").read_text().splitlines()]
    assert max(rewound) > 3 and 3 in rewound  # the interrupted runs' rows, kept aside
    # TensorBoard: the resumed runs start with a purge at the step after their checkpoint
    starts = [e.step for e in tensorboard_events(workdir / "tensorboard")
              if e.HasField("session_log") and e.session_log.status == 1]
    assert 3 in starts and cli_scenario["after_first"][-1] + 1 in starts


def test_safe_config_change_is_printed_and_saved(cli_scenario):
    code, out, err = cli_scenario["third"]
    assert "total_steps: 1000 -> 3" in err
    workdir = cli_scenario["workdir"]
    checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
    assert checkpointer.restore_config(3)["total_steps"] == 3
    checkpointer.close()


def test_finished_run_returns_at_once_without_compiling(cli_scenario, data_dir, monkeypatch,
                                                       capsys):
    def no_compiling(*args, **kwargs):
        raise AssertionError("the step was compiled")

    monkeypatch.setattr(loop, "compile_step", no_compiling)
    config = config_for(data_dir, total_steps=3)
    assert run(config, str(cli_scenario["workdir"])) == {}
    workdir = cli_scenario["workdir"]
    assert capsys.readouterr().out == (f"run already finished at step 3 (checkpoint "
                                       f"{workdir}/checkpoints/3); nothing to do. Raise "
                                       "--config.total_steps to train on\n")


def tensorboard_events(folder):
    """Every Event in the TFRecord files of a TensorBoard folder."""
    from tensorboardX.proto import event_pb2

    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            yield event


# ------------------------------------------------------------------------------------------------
# Config checks: before anything is built, and against the saved config on resume
# ------------------------------------------------------------------------------------------------
def test_keep_checkpoints_zero_is_refused_and_nothing_is_deleted(base_run, data_dir, tmp_path):
    workdir = copy_of(base_run, tmp_path)
    with pytest.raises(ConfigError, match=r"keep_checkpoints=0 must be an integer >= 1"):
        run(config_for(data_dir, keep_checkpoints=0, total_steps=6), str(workdir))
    assert steps_in(workdir) == [2, 4]
    with pytest.raises(ckpt_lib.CheckpointError, match="max_to_keep=0"):
        ckpt_lib.Checkpointer(workdir, max_to_keep=0)


@pytest.mark.parametrize("field,value,message", [
    ("checkpoint_every_steps", -1, r"checkpoint_every_steps=-1 must be an integer >= 0"),
    ("log_every_steps", 0, r"log_every_steps=0 must be an integer >= 1"),
    ("batch_size", 0, r"batch_size=0 must be an integer >= 1"),
    ("nonfinite", "ignore", r"nonfinite='ignore' is not one of skip, error"),
    ("quantizer.name", "vqq", r"quantizer.name='vqq' is not one of bsq, fsq, lfq, rvq, simvq, "
                              r"vq \(did you mean 'vq'\?\)"),
    ("optimizer.schedule", "cosin", r"optimizer.schedule='cosin' is not one of constant, cosine"),
])
def test_bad_values_are_named_before_anything_runs(data_dir, tmp_path, field, value, message):
    config = config_for(data_dir)
    apply_overrides(config, {field: value})
    with pytest.raises(ConfigError, match=message):
        run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_sample_refuses_zero_images_per_label(tmp_path):
    from vqjax.sampling.grids import sample_grids

    with pytest.raises(ValueError, match="num_per_label=0 must be >= 1"):
        sample_grids(str(tmp_path / "no_run"), str(tmp_path / "out"), num_per_label=0)


def test_checkpoint_every_zero_saves_only_at_the_end_and_damaged_latest_falls_back(
        base_run, data_dir, tmp_path, capsys, caplog):
    """The newest checkpoint is an empty folder: the run warns, moves it aside, resumes from 2,
    and (checkpoint_every_steps=0) saves only its last step; the logs read as one run."""
    workdir = copy_of(base_run, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "4")
    (workdir / "checkpoints" / "4").mkdir()
    with caplog.at_level(logging.WARNING, logger="vqjax.train"):
        run(config_for(data_dir, total_steps=5, checkpoint_every_steps=0), str(workdir))
    assert capsys.readouterr().out.startswith(
        f"resumed from step 2 (checkpoint {workdir}/checkpoints/2)")
    assert "checkpoint 4 cannot be restored" in caplog.text
    assert f"{workdir}/checkpoints/4/state/_METADATA is missing" in caplog.text
    assert steps_in(workdir) == [2, 5]
    assert [p.name for p in (workdir / "checkpoints_aside").iterdir()] == ["4.damaged"]
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4, 5]


def _truncate_largest_data_file(step_dir):
    files = sorted((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
    with open(files[-1], "r+b") as f:
        f.truncate(files[-1].stat().st_size // 2)
    return "(reading "


def _remove_state_metadata(step_dir):
    (step_dir / "state" / "_METADATA").unlink()
    return "4/state/_METADATA is missing"


def _empty_folder(step_dir):
    shutil.rmtree(step_dir)
    step_dir.mkdir()
    return "is missing"


@pytest.mark.parametrize("damage", [_truncate_largest_data_file, _remove_state_metadata,
                                    _empty_folder])
def test_damaged_latest_checkpoint_is_moved_aside_and_the_previous_restored(
        base_run, data_dir, tmp_path, caplog, damage):
    workdir = copy_of(base_run, tmp_path)
    reason = damage(workdir / "checkpoints" / "4")
    checkpointer, abstract = restorer(workdir, data_dir)
    with caplog.at_level(logging.WARNING, logger="vqjax.train"):
        state, data_state, _, step = checkpointer.restore_with_fallback(abstract)
    checkpointer.close()
    assert step == 2 and int(state.step) == 2 and data_state["step"] == 2
    warning = caplog.text
    assert "checkpoint 4 cannot be restored" in warning and reason in warning
    assert str(workdir / "checkpoints" / "4") in warning  # the file, or the step's folder
    assert steps_in(workdir) == [2]
    assert (workdir / "checkpoints_aside" / "4.damaged").is_dir()  # kept, not deleted


def test_nothing_restorable_moves_nothing(base_run, data_dir, tmp_path):
    workdir = copy_of(base_run, tmp_path)
    for step in (2, 4):
        (workdir / "checkpoints" / str(step) / "state" / "_METADATA").unlink()
    checkpointer, abstract = restorer(workdir, data_dir)
    with pytest.raises(ckpt_lib.CheckpointError, match=r"checkpoint 4: .*checkpoint 2: "):
        checkpointer.restore_with_fallback(abstract)
    checkpointer.close()
    assert steps_in(workdir) == [2, 4] and not (workdir / "checkpoints_aside").exists()


@pytest.mark.parametrize("config_fn,message", [
    (lambda d: apply_overrides(vqgan.get_config("tiny,res=16"), {"dataset.data_dir": str(d),
                                                                 **ONE_DEVICE}),
     r"holds a vit_vqgan \(size tiny, quantizer vq\) run, but the config is a vqgan \(size tiny, "
     r"quantizer vq\)"),
    (lambda d: config_for(d, **{"quantizer.name": "fsq"}),
     r"holds a vit_vqgan \(size tiny, quantizer vq\) run, but the config is a vit_vqgan "
     r"\(size tiny, quantizer fsq\)"),
])
def test_another_model_in_the_workdir_is_one_line_naming_both(base_run, data_dir, tmp_path,
                                                              config_fn, message):
    workdir = copy_of(base_run, tmp_path)
    with pytest.raises(ConfigError, match=message) as error:
        run(config_fn(data_dir), str(workdir))
    assert "\n" not in str(error.value)
    assert steps_in(workdir) == [2, 4] and not (workdir / "checkpoints_aside").exists()


@pytest.mark.parametrize("overrides,named", [
    ({"quantizer.vq.use_cosine_sim": False}, "quantizer.vq.use_cosine_sim: True -> False"),
    ({"optimizer.lr": 2e-3}, "optimizer.lr: 0.001 -> 0.002"),
])
def test_changed_hyperparameters_are_refused_with_a_diff(base_run, data_dir, tmp_path,
                                                         overrides, named):
    workdir = copy_of(base_run, tmp_path)
    with pytest.raises(ConfigError, match="change the model or the data stream") as error:
        run(config_for(data_dir, total_steps=6, **overrides), str(workdir))
    assert named in str(error.value) and "total_steps" not in str(error.value)
    assert steps_in(workdir) == [2, 4]


# ------------------------------------------------------------------------------------------------
# The disk: a file where a folder goes, no space, a failing write
# ------------------------------------------------------------------------------------------------
def test_file_where_checkpoints_folder_goes_is_an_error_before_training(data_dir, tmp_path,
                                                                        monkeypatch):
    def no_compiling(*args, **kwargs):
        raise AssertionError("the step was compiled")

    monkeypatch.setattr(loop, "compile_step", no_compiling)
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "checkpoints").write_text("not a folder")
    start = time.perf_counter()
    with pytest.raises(ckpt_lib.WorkdirError, match=f"{workdir}/checkpoints is a file"):
        run(config_for(data_dir), str(workdir))
    assert time.perf_counter() - start < 60


def test_too_little_free_space_fails_the_save_in_one_line(base_run, data_dir, tmp_path,
                                                          monkeypatch):
    workdir = copy_of(base_run, tmp_path)
    real = shutil.disk_usage

    def almost_full(path):
        return real(path)._replace(free=100_000)

    monkeypatch.setattr(ckpt_lib.shutil, "disk_usage", almost_full)
    with pytest.raises(ckpt_lib.CheckpointError) as error:
        run(config_for(data_dir, total_steps=5), str(workdir))
    message = str(error.value)
    assert "\n" not in message
    assert f"cannot save checkpoint 5 in {workdir}/checkpoints" in message
    assert "needed, 0.1 MB (100000 bytes) free" in message
    assert "checkpoints [2, 4] are intact" in message
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4"]


def test_failed_write_is_one_line_keeps_the_checkpoints_and_the_rerun_cleans_up(tmp_path, capfd):
    """A write that fails halfway (a file size limit: EFBIG, as ENOSPC would) surfaces as one
    CheckpointError naming the step, folder and reason; the next start removes the partial
    folder."""
    checkpointer = ckpt_lib.Checkpointer(tmp_path / "run", max_to_keep=3)
    state = {"w": jax.random.normal(jax.random.key(0), (512, 512))}  # 1 MB, incompressible
    checkpointer.save(1, state, {}, {"a": 1})
    checkpointer.wait()
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, hard))
    try:
        checkpointer.save(2, {"w": state["w"] + 1}, {}, {"a": 1})
        with pytest.raises(ckpt_lib.CheckpointError) as error:
            checkpointer.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    checkpointer.close()
    message = str(error.value)
    assert "\n" not in message and "File too large" in message, message
    assert f"saving checkpoint 2 in {tmp_path}/run/checkpoints failed" in message
    assert "checkpoints [1] are intact" in message
    assert "Traceback" not in capfd.readouterr().err
    assert "Traceback" in (tmp_path / "run" / ckpt_lib.ERROR_LOG).read_text()
    assert any(".orbax-checkpoint-tmp" in p.name for p in (tmp_path / "run/checkpoints").iterdir())
    ckpt_lib.Checkpointer(tmp_path / "run", max_to_keep=3).close()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["1"]


def test_pinning_and_step_zero_fine_tuning_are_not_refused_config_changes():
    """A trainer that pins an unpinned run (tokenizer_step -1 -> N) and a fine-tuning run of a
    converted step-0 checkpoint (batch size, lr) resume; architecture changes never do."""
    from vqjax.train.validate import ConfigError, check_resume_config

    saved = {"trainer": "maskgit", "batch_size": 256, "optimizer": {"lr": 1e-4},
             "tokenizer_step": -1, "tokenizer_fingerprint": "",
             "model": {"name": "maskgit", "size": "B", "dropout": 0.1}}
    current = {**saved, "batch_size": 8, "optimizer": {"lr": 1e-5}, "tokenizer_step": 0,
               "tokenizer_fingerprint": "config:abc,params:def"}
    changes = check_resume_config(saved, current, workdir="w", step=0)
    assert len(changes) == 4
    with pytest.raises(ConfigError, match=r"batch_size: 256 -> 8"):
        check_resume_config(saved, current, workdir="w", step=10)
    pinned = {**saved, "tokenizer_step": 3, "tokenizer_fingerprint": "config:x,params:y"}
    with pytest.raises(ConfigError, match="tokenizer_step: 3 -> 0"):
        check_resume_config(pinned, current, workdir="w", step=0)
    changed_model = {**saved, "model": {**saved["model"], "dropout": 0.0}}
    with pytest.raises(ConfigError, match="model.dropout"):
        check_resume_config(saved, changed_model, workdir="w", step=0)
