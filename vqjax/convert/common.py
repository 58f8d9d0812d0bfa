"""What every converter shares: reading flax msgpack files, checking a converted tree against the
vqjax model's own, and writing ordinary runs atomically.

    config, variables = vqjax.convert.maskgit.tokenizer_from_checkpoint(path, base_config)
    write_tokenizer_run(config, variables, "converted/maskgit256/tokenizer")

A written run is what `launch.train` would have saved at step 0: the whole train state (fresh
optimizer and discriminator states, params = EMA params = the converted weights, the quantizer
state), the data iterator's start position and the config, in `<out>/checkpoints/0`, plus
`<out>/config.json` and `<out>/converted_from.json` (the source files and their sha256). So
`vqjax.load`, `launch.sample`, `launch.evaluate` take it as it is, and `launch.train` with the same
config and workdir fine-tunes it. Each run is staged in a temporary directory next to `out` and
renamed into place when complete (`Staging`), so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np


class ConversionError(ValueError):
    """A released file that is not what the converter expects (names the key and the shape)."""


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def read_flax_msgpack(path: str | os.PathLike, what: str) -> dict:
    """The variables dict of a `flax.serialization.to_bytes(variables)` file."""
    import flax
    import msgpack

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConversionError(f"{what}: {path} does not exist")
    data = path.read_bytes()
    try:
        tree = flax.serialization.msgpack_restore(data)
    except (msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException, ValueError,
            TypeError, KeyError) as e:
        raise ConversionError(f"{what}: {path} is not a flax msgpack checkpoint "
                              f"(flax.serialization.to_bytes of the variables): {e}") from None
    if not isinstance(tree, dict) or "params" not in tree or not isinstance(tree["params"], dict):
        keys = list(tree) if isinstance(tree, dict) else type(tree).__name__
        raise ConversionError(f"{what}: {path} is not a variables dict with a 'params' "
                              f"collection (top level: {keys})")
    return tree


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def flatten(tree: Mapping) -> dict[str, Any]:
    """{"a/b/c": leaf} of a nested dict."""
    out: dict[str, Any] = {}

    def visit(prefix, node):
        if isinstance(node, Mapping):
            for key, value in node.items():
                visit(f"{prefix}/{key}" if prefix else str(key), value)
        else:
            out[prefix] = node

    visit("", tree)
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def get(flat: Mapping[str, Any], key: str, what: str, expected: str = "") -> np.ndarray:
    """flat[key] as an array, or a ConversionError naming the missing key."""
    if key not in flat:
        detail = f" (expected shape {expected})" if expected else ""
        raise ConversionError(f"{what}: missing key {key!r}{detail}")
    return np.asarray(flat[key])


def check_against(flat_source: Mapping[str, Any], expected: Mapping[str, tuple], what: str) -> None:
    """Every key of `expected` (source key -> shape) present with its shape, and nothing else."""
    problems = []
    for key, shape in expected.items():
        if key not in flat_source:
            problems.append(f"missing key {key!r} (expected shape {tuple(shape)})")
        elif tuple(np.shape(flat_source[key])) != tuple(shape):
            problems.append(f"key {key!r} has shape {tuple(np.shape(flat_source[key]))}, "
                            f"expected {tuple(shape)}")
    for key in flat_source:
        if key not in expected:
            problems.append(f"unexpected key {key!r} with shape {tuple(np.shape(flat_source[key]))}")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more"
                                          if len(problems) > 8 else "")
        raise ConversionError(f"{what}: the checkpoint does not match the architecture inferred "
                              f"from it: {shown}")


def cast_like(tree, abstract, what: str):
    """`tree` (nested dict of arrays) with the structure, shapes and dtypes of `abstract`."""
    flat, abstract_flat = flatten(tree), flatten(abstract)
    missing = sorted(set(abstract_flat) - set(flat))
    extra = sorted(set(flat) - set(abstract_flat))
    if missing or extra:
        raise ConversionError(f"{what}: converted tree does not match the vqjax model: missing "
                              f"{missing[:5]}, unexpected {extra[:5]}")
    out = {}
    for key, spec in abstract_flat.items():
        value = np.asarray(flat[key])
        if tuple(value.shape) != tuple(spec.shape):
            raise ConversionError(f"{what}: {key!r} has shape {value.shape}, the vqjax model "
                                  f"expects {tuple(spec.shape)}")
        out[key] = jnp.asarray(value, spec.dtype)
    return unflatten(out)


# ------------------------------------------------------------------------------------------------
# Writing runs atomically
# ------------------------------------------------------------------------------------------------
class Staging:
    """Temporary directories next to their final places, renamed into place by `commit()` (all
    or nothing as far as the filesystem allows: every target is checked before anything is
    written, and a failure before commit removes every temporary directory)."""

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self.pending: list[tuple[Path, Path]] = []
        self.created_parents: list[Path] = []

    def check_target(self, out: str | os.PathLike) -> Path:
        out = Path(out).expanduser().absolute()
        if out.exists() and not self.overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
        return out

    def directory(self, out: Path) -> Path:
        missing = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
        out.parent.mkdir(parents=True, exist_ok=True)
        self.created_parents.extend(missing)  # removed again on abort when left empty
        temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.converting-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o777 & ~umask)  # mkdtemp's 0o700 -> an ordinary directory
        self.pending.append((temporary, out))
        return temporary

    def commit(self) -> None:
        for temporary, out in self.pending:
            if out.exists():
                shutil.rmtree(out)
            os.replace(temporary, out)
        self.pending, self.created_parents = [], []

    def abort(self) -> None:
        for temporary, _ in self.pending:
            shutil.rmtree(temporary, ignore_errors=True)
        for parent in self.created_parents:  # innermost first
            with contextlib.suppress(OSError):
                parent.rmdir()
        self.pending, self.created_parents = [], []


@contextlib.contextmanager
def staging(overwrite: bool = False) -> Iterator[Staging]:
    stage = Staging(overwrite)
    try:
        yield stage
        stage.commit()
    finally:
        stage.abort()


def _save_run(directory: Path, config: ml_collections.ConfigDict, state, source: dict) -> None:
    from vqjax.train import checkpoint as ckpt_lib
    from vqjax.train.loop import config_to_dict

    config_dict = config_to_dict(config)
    checkpointer = ckpt_lib.Checkpointer(directory, async_save=False)
    try:
        checkpointer.save(0, state, {"step": 0, "num_skipped": 0}, config_dict, force=True)
    finally:
        checkpointer.close()
    (directory / "config.json").write_text(json.dumps(config_dict, indent=2))
    (directory / "converted_from.json").write_text(json.dumps(source, indent=2))


def _one_device_mesh():
    from vqjax.train import mesh as mesh_lib

    return mesh_lib.make_mesh(devices=jax.local_devices()[:1])


def tokenizer_train_state(config: ml_collections.ConfigDict, variables: Mapping):
    """The tokenizer trainer's step-0 state with `variables` ({"params", "quantizer_state"}) as its
    params, EMA params and quantizer state (fresh optimizer and discriminator)."""
    from vqjax.quantizers.linen import QUANTIZER_STATE
    from vqjax.train.tokenizer import TokenizerTrainer

    layout = ml_collections.ConfigDict(config.to_dict())
    layout.loss.perceptual_weight = 0.0  # the state's layout does not depend on it; no VGG16
    trainer = TokenizerTrainer(layout, _one_device_mesh())
    state = jax.jit(trainer.init_state)(jax.random.key(int(config.seed)))
    params = cast_like(variables["params"], state.params, "params")
    quantizer_state = cast_like(variables.get(QUANTIZER_STATE, {}), state.quantizer_state,
                                "quantizer state")
    return state.replace(params=params, ema_params=params, quantizer_state=quantizer_state)


def write_tokenizer_run(config: ml_collections.ConfigDict, variables: Mapping, out,
                        source: dict | None = None, stage: Staging | None = None) -> Path:
    """Writes a tokenizer run (`config.trainer == "tokenizer"`) with these variables to `out`;
    with `stage`, into its temporary directory (renamed to `out` at `stage.commit()`)."""
    return _write_run(config, lambda: tokenizer_train_state(config, variables), out, source, stage)


def _write_run(config, make_state, out, source: dict | None, stage: Staging | None) -> Path:
    """`make_state()` saved as a step-0 run in `out`: staged and committed here unless the
    caller passes its own `stage` (several runs committed together)."""
    own = stage is None
    stage = stage or Staging()
    out = stage.check_target(out)
    try:
        _save_run(stage.directory(out), config, make_state(), source or {})
        if own:
            stage.commit()
    finally:
        if own:
            stage.abort()
    return out


def maskgit_train_state(config: ml_collections.ConfigDict, params: Mapping, tokenizer):
    """The MaskGIT trainer's step-0 state with `params` as params and EMA params."""
    from vqjax.train.maskgit import MaskGITTrainer

    trainer = MaskGITTrainer(config, _one_device_mesh(), tokenizer,
                             config.model.num_classes or None)
    state = jax.jit(trainer.init_state)(jax.random.key(int(config.seed)))
    params = cast_like(params, state.params, "params")
    return state.replace(params=params, ema_params=params)


def write_maskgit_run(config: ml_collections.ConfigDict, params: Mapping, out, tokenizer,
                      source: dict | None = None, stage: Staging | None = None) -> Path:
    """Writes a MaskGIT run (`config.trainer == "maskgit"`, its `tokenizer_workdir` set) with these
    params to `out`. `tokenizer`: a handle with `.model` (e.g. `vqjax.inference.Tokenizer`, or a
    `SimpleNamespace(model=...)` when the tokenizer is written in the same staging)."""
    return _write_run(config, lambda: maskgit_train_state(config, params, tokenizer), out, source,
                      stage)
