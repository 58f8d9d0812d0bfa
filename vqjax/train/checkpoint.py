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
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from vqjax.paths import resolve

ITEMS = ("state", "data", "config")


class Checkpointer:
    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 3,
                 async_save: bool = True, read_only: bool = False):
        self.directory = epath.Path(resolve(workdir)) / "checkpoints"
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict | None, config: dict,
             force: bool = False) -> bool:
        return self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state or {}),
                config=ocp.args.JsonSave(config),
            ),
            force=force,
        )

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree` (arrays or abstract values) with the given shardings."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )
