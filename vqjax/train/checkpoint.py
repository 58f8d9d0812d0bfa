"""Checkpoints: an Orbax `CheckpointManager` in `<workdir>/checkpoints`.

Each checkpoint holds three items: `state` (the whole train state pytree: params, optimizer states,
EMA params, quantizer state, step), `data` (the input iterator's position, JSON) and `config`
(the run's config, JSON). Orbax writes each step into a temporary directory and renames it when
complete, so a run killed at any moment leaves only whole checkpoints behind; saves are async, so
the train loop continues while the previous one is written.

Restoring takes an abstract state whose leaves carry the target shardings: a checkpoint written on
8 devices restores onto 1 (or any other mesh). A checkpoint written before a state field existed
restores when the state's class derives that field (`fill_missing(restored_fields) -> {name:
value}`, e.g. the tokenizer's `ema_quantizer_state` from its `quantizer_state`).

What can go wrong, and what happens then:
- the latest checkpoint is damaged (a truncated data file, a missing metadata file, an empty step
  folder): `restore_with_fallback` warns naming the step, the file and the reason, moves the
  folder to `<workdir>/checkpoints_aside/` (never deletes it) and restores the newest older
  checkpoint that reads back whole; if none does, nothing is moved and the error lists each;
- the disk is full or unwritable: before each save the free space is compared with the size of
  the last checkpoint, and a save that fails anyway is reported in one line naming the folder, the
  reason and the bytes needed (Orbax's own report goes to `<workdir>/checkpoint_errors.log`);
  earlier checkpoints are untouched, and the temporary folder of a failed save is removed when the
  run starts again;
- a file where a folder should be (or the reverse) is an error before anything is built;
- checkpoints that a MaskGIT run pinned (`vqjax.train.pinning`) are kept beyond `max_to_keep`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
import traceback
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from vqjax.paths import is_remote, resolve
from vqjax.train import pinning

log = logging.getLogger("vqjax.train")

ITEMS = ("state", "data", "config")
ASIDE_DIR = "checkpoints_aside"
ERROR_LOG = "checkpoint_errors.log"
# Files every complete checkpoint has (Orbax's commit writes them last within each item).
REQUIRED_FILES = ("state/_METADATA", "data/metadata", "config/metadata")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be saved or restored; the message names the step, path and reason."""


class WorkdirError(CheckpointError):
    """The workdir (or a folder the run writes) cannot be used."""


def check_workdir(workdir: str) -> None:
    """Raises WorkdirError, before anything is trained, when the workdir cannot hold a run: a file
    where a folder goes (or the reverse), a path that cannot be created, no write permission.
    Without it Orbax trains, then waits about 290 s for a signal and fails."""
    if is_remote(workdir):
        return
    root = Path(workdir)
    layout = ((root, True), (root / "checkpoints", True), (root / ASIDE_DIR, True),
              (root / "tensorboard", True), (root / "images", True),
              (root / "metrics.jsonl", False), (root / "config.json", False))
    for path, is_folder in layout:
        if path.exists() and path.is_dir() != is_folder:
            found, needed = ("file", "folder") if is_folder else ("folder", "file")
            raise WorkdirError(f"{path} is a {found}, but the run needs a {needed} there: move "
                               "it away or choose another --workdir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(f"cannot create the workdir {root}: {error.strerror or error}") \
            from error
    if not os.access(root, os.W_OK | os.X_OK):
        raise WorkdirError(f"the workdir {root} is not writable")


def _folder_bytes(path: epath.Path) -> int:
    if is_remote(os.fspath(path)):
        return 0
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def _megabytes(count: int) -> str:
    return f"{count / 2**20:.1f} MB ({count} bytes)"


def short_reason(error: BaseException, limit: int = 400) -> str:
    """One line saying what went wrong in an Orbax/TensorStore error chain: the OS error and the
    array and folder it hit when the chain names them, else the first line of the message."""
    messages, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    text = "\n".join(messages)
    os_error = (re.search(r"([A-Za-z][^:\[\n\"]*?) \[os_error_code='(\d+)'\]", text)
                or re.search(r"\[Errno (\d+)\] ([^\n'\"]+)", text))
    access = re.search(r'Error (reading|writing) "([^"]+)" in OCDBT database at local file '
                       r'"([^"]+)": ?([^\n]*)', text)
    if os_error is not None:
        reason, code = (os_error.group(1), os_error.group(2)) if "os_error_code" in \
            os_error.group(0) else (os_error.group(2), os_error.group(1))
        reason = f"{reason.strip()} (errno {code})"
        if access is not None:
            reason += f" {access.group(1)} {access.group(2)} in {access.group(3)}"
    elif access is not None:
        detail = access.group(4).strip().rstrip("')")
        reason = f"{detail} ({access.group(1)} {access.group(2)} in {access.group(3)})"
    else:
        found = re.search(r"[^\n]*(?:not found|No such file)[^\n]*", text)
        reason = found.group(0) if found else (messages[0].strip().splitlines() or [""])[0]
    return " ".join(reason.split())[:limit]


class _OrbaxErrorsToFile(logging.Filter):
    """Orbax logs a failed async write as hundreds of traceback lines per thread; they go to
    `<workdir>/checkpoint_errors.log` instead, and the run reports the failure in one line."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or "orbax" not in (record.pathname or ""):
            return True
        try:
            with open(self.path, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.getMessage()}\n")
                if record.exc_info:
                    f.write("".join(traceback.format_exception(*record.exc_info)))
        except OSError:
            return True  # the disk is full: better on the console than nowhere
        return False


class _DropReadOnlyNotices(logging.Filter):
    """Orbax warns twice each time a read-only manager is opened ("read_only=True, setting
    save_interval_steps=0", "Given directory is read only"): expected here, so not shown."""

    NOTICES = ("CheckpointManagerOptions.read_only=True", "Given directory is read only")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


logging.getLogger("absl").addFilter(_DropReadOnlyNotices())


class Checkpointer:
    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3,
                 async_save: bool = True, read_only: bool = False):
        self.workdir = resolve(os.fspath(workdir))
        self.directory = epath.Path(self.workdir) / "checkpoints"
        self.read_only = read_only
        self._log_filter = None
        if read_only:
            options = ocp.CheckpointManagerOptions(read_only=True, create=False,
                                                   enable_async_checkpointing=async_save)
        else:
            check_workdir(self.workdir)
            if max_to_keep < 1:
                raise CheckpointError(f"max_to_keep={max_to_keep} would delete every checkpoint "
                                      "(config.keep_checkpoints must be >= 1)")
            policies = ocp.checkpoint_managers
            options = ocp.CheckpointManagerOptions(
                create=True,
                enable_async_checkpointing=async_save,
                preservation_policy=policies.AnyPreservationPolicy([
                    policies.LatestN(n=max_to_keep), pinning.KeepPinned(self.workdir)]),
            )
            if not is_remote(self.workdir):
                self._log_filter = _OrbaxErrorsToFile(Path(self.workdir) / ERROR_LOG)
                logging.getLogger("absl").addFilter(self._log_filter)
                self._remove_partial_saves()
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)
        self._pending: tuple[int, int] | None = None  # (step, bytes needed) of the save in flight

    def _remove_partial_saves(self) -> None:
        """Deletes the temporary folders of saves that never completed (killed, aborted, disk
        full): they hold no usable checkpoint and may fill the disk again. Orbax's own
        `cleanup_tmp_directories` runs in the background and is not awaited by a run that ends
        before its first save."""
        if jax.process_index() == 0 and Path(self.directory).is_dir():
            for path in Path(self.directory).glob("*.orbax-checkpoint-tmp*"):
                log.warning("removing %s, the partial folder of a save that did not finish", path)
                shutil.rmtree(path, ignore_errors=True)
        _sync("vqjax.checkpoint.remove_partial_saves")

    # -- what is there -------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def step_path(self, step: int) -> epath.Path:
        return self.directory / str(step)

    def missing_files(self, step: int) -> list[str]:
        """The files of REQUIRED_FILES that checkpoint `step` lacks (cheap: no data is read)."""
        path = self.step_path(step)
        return [name for name in REQUIRED_FILES if not (path / name).exists()]

    # -- saving ----------------------------------------------------------------------------------
    def save(self, step: int, state: Any, data_state: dict | None, config: dict,
             force: bool = False) -> bool:
        """Saves asynchronously. Raises CheckpointError (one line) when the previous save failed
        or the disk has less free space than the checkpoint needs."""
        self.wait()  # Orbax would wait for the previous save anyway; this names its failure
        needed = self._bytes_needed(state)
        free = self._free_bytes()
        if free is not None and free < needed:
            raise CheckpointError(
                f"cannot save checkpoint {step} in {self.directory}: about {_megabytes(needed)} "
                f"needed, {_megabytes(free)} free on that disk. {self._intact()}; free space and "
                "rerun the same command to resume")
        self._pending = (step, needed)
        try:
            return self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(data_state or {}),
                    config=ocp.args.JsonSave(config),
                ),
                force=force,
            )
        except Exception as error:
            raise self._save_failed(error) from error

    def _bytes_needed(self, state: Any) -> int:
        """The size of the newest checkpoint on disk, or of the state in memory if larger."""
        in_memory = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                        for x in jax.tree.leaves(state) if hasattr(x, "dtype"))
        latest = self.latest_step()
        on_disk = _folder_bytes(self.step_path(latest)) if latest is not None else 0
        return max(in_memory, on_disk)

    def _free_bytes(self) -> int | None:
        if is_remote(self.workdir):
            return None
        try:
            return shutil.disk_usage(os.fspath(self.directory)).free
        except OSError:
            return None

    def _intact(self) -> str:
        steps = self.all_steps()
        return (f"The checkpoints {steps} are intact" if steps else "No earlier checkpoint exists")

    def _save_failed(self, error: BaseException) -> CheckpointError:
        step, needed = self._pending or (None, 0)
        self._pending = None
        free = self._free_bytes()
        space = (f"; about {_megabytes(needed)} needed, {_megabytes(free)} free"
                 if free is not None else "")
        details = f" (Orbax's report: {Path(self.workdir) / ERROR_LOG})" if self._log_filter else ""
        return CheckpointError(
            f"saving checkpoint {step} in {self.directory} failed: {short_reason(error)}{space}. "
            f"{self._intact()}{details}")

    def wait(self) -> None:
        """Blocks until the save in flight is written; CheckpointError (one line) if it failed."""
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            raise self._save_failed(error) from error
        self._pending = None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:  # already reported by wait()
                pass
            self.detach()

    def detach(self) -> None:
        """Stops routing Orbax's errors to the log file (an aborted run leaves the save alone)."""
        if self._log_filter is not None:
            logging.getLogger("absl").removeFilter(self._log_filter)
            self._log_filter = None

    # -- restoring -------------------------------------------------------------------------------
    def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict, dict]:
        """(state, data_state, config) of `step` (default: the latest complete checkpoint).
        `abstract_state`: a pytree of jax.ShapeDtypeStruct with the target `.sharding`s."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        target, missing = abstract_state, self._missing_fields(step, abstract_state)
        if missing:  # an older checkpoint: restore what it has, derive the rest
            target = {f.name: getattr(abstract_state, f.name)
                      for f in dataclasses.fields(abstract_state) if f.name not in missing}
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target),
                data=ocp.args.JsonRestore(),
                config=ocp.args.JsonRestore(),
            ),
        )
        state = restored["state"]
        if missing:
            filled = type(abstract_state).fill_missing(state)
            unknown = [name for name in missing if name not in filled]
            if unknown:
                raise ValueError(f"checkpoint {step} in {self.directory} has no "
                                 f"{', '.join(unknown)} and the state cannot derive it")
            filled = {name: jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), filled[name],
                                         getattr(abstract_state, name)) for name in missing}
            state = type(abstract_state)(**state, **filled)
        return state, dict(restored["data"] or {}), dict(restored["config"] or {})

    def _missing_fields(self, step: int, abstract_state: Any) -> list[str]:
        """Top-level fields of a dataclass state (whose class has `fill_missing`) that checkpoint
        `step` does not hold: written before the field existed."""
        fill = getattr(type(abstract_state), "fill_missing", None)
        if fill is None or not dataclasses.is_dataclass(abstract_state):
            return []
        path = self.directory / str(step) / "state"  # the manager's default step naming
        if path.exists():  # the state item's tree metadata alone (no warnings about the others)
            metadata = ocp.StandardCheckpointHandler().metadata(path)
        else:
            metadata = self.manager.item_metadata(step)["state"]
        saved = getattr(metadata, "tree", metadata)
        if not isinstance(saved, dict):
            return []
        return [f.name for f in dataclasses.fields(abstract_state) if f.name not in saved]

    def restore_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(restored["config"])

    def newest_config(self, step: int | None = None) -> tuple[int, dict] | None:
        """(step, config) of the newest checkpoint whose config reads back (or of `step` only);
        None if none does."""
        for step in reversed(self.all_steps()) if step is None else [step]:
            try:
                return step, self.restore_config(step)
            except Exception:  # damaged: restore_with_fallback reports it
                continue
        return None

    def _problem(self, step: int, abstract_state: Any):
        """(restored tuple, None) or (None, "file: reason") for checkpoint `step`."""
        missing = self.missing_files(step)
        if missing:
            return None, f"{self.step_path(step) / missing[0]} is missing"
        try:
            return self.restore(step, abstract_state), None
        except Exception as error:  # TensorStore, Orbax metadata, JSON: all mean "unreadable"
            return None, f"{self.step_path(step)}: {short_reason(error)}"

    def restore_with_fallback(self, abstract_state: Any, step: int | None = None
                              ) -> tuple[Any, dict, dict, int]:
        """(state, data_state, config, step) of `step`, or of the newest checkpoint that restores
        whole. Newer checkpoints that cannot be restored are moved to checkpoints_aside/ with a
        warning naming the step, file and reason; with an explicit `step`, the newer ones are
        moved there too (nothing is deleted, and later saves do not collide with them)."""
        steps = self.all_steps()
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint {step} in {self.directory}; it holds "
                                  f"{steps or 'none'}")
        candidates = [step] if step is not None else list(reversed(steps))
        failures: list[tuple[int, str]] = []
        for candidate in candidates:
            restored, problem = self._problem(candidate, abstract_state)
            if _all_processes_agree(problem is None):
                break
            failures.append((candidate, problem or "unreadable on another process"))
        else:
            listing = "; ".join(f"checkpoint {s}: {why}" for s, why in failures)
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored ({listing}). "
                                  "Nothing was moved; a config for another model fails this "
                                  "way too")
        state, data_state, config = restored
        for bad, why in failures:
            aside = self.move_aside(bad, "damaged")
            log.warning("checkpoint %d cannot be restored (%s); moved it to %s and resumed from "
                        "checkpoint %d", bad, why, aside, candidate)
        for older in [s for s in steps if s < candidate and self.missing_files(s)]:
            # e.g. half deleted by the keep policy when a run was killed or aborted
            aside = self.move_aside(older, "incomplete")
            log.warning("checkpoint %d is incomplete (%s missing); moved it to %s", older,
                        self.missing_files(older) if self.step_path(older).exists() else
                        "all files", aside)
        if step is not None:
            for later in [s for s in steps if s > step]:
                aside = self.move_aside(later, f"after_{step}")
                log.warning("resuming from checkpoint %d as asked: moved the later checkpoint %d "
                            "to %s", step, later, aside)
        return state, data_state, config, candidate

    def move_aside(self, step: int, reason: str) -> epath.Path:
        """Moves checkpoint `step` to <workdir>/checkpoints_aside/<step>.<reason>[.<time>]."""
        aside_dir = epath.Path(self.workdir) / ASIDE_DIR
        target = aside_dir / f"{step}.{reason}"
        if target.exists():
            target = aside_dir / f"{step}.{reason}.{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            aside_dir.mkdir(parents=True, exist_ok=True)
            self.step_path(step).rename(target)
        _sync("vqjax.checkpoint.move_aside")
        self.manager.reload()
        return target


def _all_processes_agree(ok: bool) -> bool:
    """True when `ok` holds on every process (each reads its own shards of a checkpoint)."""
    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract values) with the given shardings."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
