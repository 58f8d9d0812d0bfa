"""A MaskGIT run is pinned to one checkpoint of its tokenizer.

Token indices mean something only for the tokenizer that produced them. A MaskGIT run therefore
records, in its config (saved with every checkpoint), the tokenizer checkpoint step it started
from (`config.tokenizer_step`) and that checkpoint's fingerprint (`config.tokenizer_fingerprint`:
a hash of the tokenizer's saved config and one of its restored variables). Resuming, sampling and
evaluation restore exactly that step and compare the fingerprint, and refuse with an error naming
the step and the workdir when the checkpoint is gone or differs, instead of silently decoding with
a tokenizer that trained on.

The tokenizer side keeps pinned checkpoints: the MaskGIT run writes a marker
`<tokenizer_workdir>/pins/<id>.json` ({"step", "fingerprint", "workdir"}), and every
`Checkpointer` keeps the steps its workdir's markers name in addition to its newest
`keep_checkpoints` (`KeepPinned`, an Orbax preservation policy). A marker is removed by hand when
the MaskGIT run that wrote it is gone. Pre-encoded token datasets record the step and fingerprint
too; they do not make the marker unnecessary, since samples are decoded by the tokenizer.

The functions take plain values (a config mapping, a variables pytree, paths), so any restore
path (the trainer, `vqjax.load`) can use them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vqjax.paths import is_remote, resolve

log = logging.getLogger("vqjax.train")

PINS_DIR = "pins"


class TokenizerPinError(RuntimeError):
    """The pinned tokenizer checkpoint is gone or is not the one the run was trained with."""


# ------------------------------------------------------------------------------------------------
# Fingerprints
# ------------------------------------------------------------------------------------------------
def config_hash(config: Mapping) -> str:
    """12 hex digits of the SHA-256 of the config as canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_MULTIPLIERS = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77))
_POSITION = (np.uint32(0xC2B2AE3D), np.uint32(0x27D4EB2F))


def _leaf_sums(x, xp) -> tuple:
    """Two order-free 32-bit sums over the bits of `x` and their positions: integer arithmetic
    wraps modulo 2**32, so the result is exact under any sharding and reduction order."""
    x = xp.asarray(x)
    if x.dtype.itemsize == 2:
        bits = x.view(xp.uint16).astype(xp.uint32) if xp is np else \
            jax.lax.bitcast_convert_type(x, xp.uint16).astype(xp.uint32)
    elif x.dtype.itemsize == 4:
        bits = x.view(xp.uint32) if xp is np else jax.lax.bitcast_convert_type(x, xp.uint32)
    else:  # 1- or 8-byte leaves (bool, int8, float64): their values, which is enough to compare
        bits = x.astype(xp.float32)
        bits = bits.view(xp.uint32) if xp is np else jax.lax.bitcast_convert_type(bits, xp.uint32)
    bits = bits.reshape(-1)
    position = xp.arange(bits.shape[0], dtype=xp.uint32)
    sums = []
    for multiplier, offset in zip(_MULTIPLIERS, _POSITION):
        mixed = bits * multiplier + position * offset
        mixed = mixed ^ (mixed >> 15)
        mixed = mixed * np.uint32(0x2C1B3C6D)
        sums.append(xp.sum(mixed, dtype=xp.uint32))
    return tuple(sums)


def params_hash(variables: Any, on_devices: bool | None = None) -> str:
    """16 hex digits hashing every leaf of `variables` (its path, shape, dtype and bits). Jax
    arrays are hashed on their devices when not fully addressable (multi-host; or
    `on_devices=True`), on the host otherwise; both give the same digits."""
    leaves = sorted(((jax.tree_util.keystr(path), leaf) for path, leaf in
                     jax.tree_util.tree_leaves_with_path(variables)), key=lambda kv: kv[0])
    digest = hashlib.sha256()
    if on_devices is None:
        on_devices = not all(not isinstance(x, jax.Array) or x.is_fully_addressable
                             for _, x in leaves)
    if not on_devices:
        sums = [_leaf_sums(np.asarray(x), np) for _, x in leaves]
    else:
        import jax.numpy as jnp

        from vqjax.train import mesh as mesh_lib

        arrays = [x for _, x in leaves]
        mesh = next(x.sharding.mesh for x in arrays if hasattr(x.sharding, "mesh"))
        fn = jax.jit(lambda xs: [_leaf_sums(x, jnp) for x in xs],
                     out_shardings=mesh_lib.replicated(mesh))
        sums = jax.tree.map(lambda s: np.asarray(s.addressable_data(0)), fn(arrays))
    for (name, x), (a, b) in zip(leaves, sums):
        digest.update(f"{name}|{tuple(x.shape)}|{np.dtype(x.dtype).name}|{int(a)}|{int(b)};"
                      .encode())
    return digest.hexdigest()[:16]


def fingerprint(config: Mapping, variables: Any) -> str:
    """"config:<12 hex>,params:<16 hex>" of a restored tokenizer checkpoint."""
    return f"config:{config_hash(config)},params:{params_hash(variables)}"


def check_fingerprint(expected: str, actual: str, *, tokenizer_workdir: str, step: int) -> None:
    """Raises TokenizerPinError naming which part differs (empty `expected`: nothing pinned)."""
    if not expected or expected == actual:
        return
    old = dict(part.split(":", 1) for part in expected.split(","))
    new = dict(part.split(":", 1) for part in actual.split(","))
    parts = [f"{key} hash {old.get(key)} -> {new.get(key)}" for key in ("config", "params")
             if old.get(key) != new.get(key)]
    raise TokenizerPinError(
        f"tokenizer checkpoint {step} of {tokenizer_workdir} is not the one this MaskGIT run was "
        f"trained with ({'; '.join(parts)}): it was replaced or retrained. Restore the original "
        "tokenizer checkpoint, or train a new MaskGIT run on this tokenizer")


def pinned_step(config) -> int | None:
    """The tokenizer step a MaskGIT config pins (None: none yet, take the latest)."""
    step = config.get("tokenizer_step", -1) if hasattr(config, "get") else -1
    return None if step is None or int(step) < 0 else int(step)


def pinned_fingerprint(config) -> str:
    return (config.get("tokenizer_fingerprint", "") if hasattr(config, "get") else "") or ""


def missing_step_error(tokenizer_workdir: str, step: int, available: Sequence[int]) -> \
        TokenizerPinError:
    return TokenizerPinError(
        f"this MaskGIT run is pinned to tokenizer checkpoint {step} of {tokenizer_workdir}, "
        f"which is gone (its checkpoints: {list(available) or 'none'}). Restore that checkpoint "
        "(look in its checkpoints_aside/), or train a new MaskGIT run on this tokenizer")


# ------------------------------------------------------------------------------------------------
# Markers that keep a pinned checkpoint
# ------------------------------------------------------------------------------------------------
def _marker_name(by_workdir: str) -> str:
    return hashlib.sha256(str(by_workdir).encode()).hexdigest()[:16] + ".json"


def pin(tokenizer_workdir: str, step: int, fingerprint_: str, by_workdir: str) -> Path | None:
    """Writes the marker that keeps checkpoint `step` of `tokenizer_workdir` for the run in
    `by_workdir`; returns its path (None, with a warning, where it cannot be written: a read-only
    tokenizer folder stays usable, just unprotected)."""
    if is_remote(tokenizer_workdir):
        log.warning("pinning: %s is remote; its checkpoint %d is not protected from deletion",
                    tokenizer_workdir, step)
        return None
    folder = Path(resolve(tokenizer_workdir)) / PINS_DIR
    path = folder / _marker_name(resolve(by_workdir))
    record = {"step": int(step), "fingerprint": fingerprint_, "workdir": resolve(by_workdir)}
    try:
        if path.exists() and json.loads(path.read_text()) == record:
            return path
        folder.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)
    except OSError as error:
        log.warning("pinning: cannot write %s (%s); tokenizer checkpoint %d is not protected "
                    "from deletion", path, error, step)
        return None
    return path


def pinned_steps(workdir: str) -> set[int]:
    """The checkpoint steps of `workdir` that markers in `<workdir>/pins/` keep."""
    if not workdir or is_remote(workdir):
        return set()
    steps = set()
    for path in sorted((Path(workdir) / PINS_DIR).glob("*.json")):
        try:
            steps.add(int(json.loads(path.read_text())["step"]))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("pinning: ignoring unreadable marker %s", path)
    return steps


@dataclasses.dataclass
class KeepPinned:
    """Orbax preservation policy: keep the checkpoints that pin markers name (read at each
    deletion decision, so a pin written while the tokenizer trains on is honoured)."""
    workdir: str

    def should_preserve(self, checkpoints, *, context) -> list[bool]:
        steps = pinned_steps(self.workdir)
        return [checkpoint.step in steps for checkpoint in checkpoints]
