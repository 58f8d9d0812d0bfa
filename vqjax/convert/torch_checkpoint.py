"""Reading PyTorch checkpoints (taming's Lightning .ckpt, LlamaGen's .pt) into checked Flax trees.

Two pieces shared by `vqjax.convert.taming` and `vqjax.convert.llamagen`:

- `load_state_dict(path, containers, source)`: the torch file's state dict as float32 numpy arrays.
  torch (CPU wheel) is needed to read the file and is imported only here. The file is first read
  with `torch.load(weights_only=True)`; released checkpoints also pickle training objects
  (Lightning callbacks, an argparse Namespace), which that refuses, so those are then read with an
  unpickler that turns every global other than torch's tensor rebuilders into an inert stub: no
  code from the file runs either way.
- `fill_tree(abstract, torch_key, state_dict, ...)`: one torch tensor per leaf of the model's
  abstract parameter tree (from `jax.eval_shape(model.init, ...)`), with the layout change for
  convolutions, every shape checked, and every tensor accounted for: a missing or unexpected key,
  or a wrong shape, raises a ValueError naming the key and the expected shape.
"""

from __future__ import annotations

import os
import pickle
from typing import Callable, Iterable, Mapping

import jax
import numpy as np


class CheckpointError(ValueError):
    """A file that is not the expected checkpoint, or a tree that does not match the model."""


# -- reading the file ------------------------------------------------------------------------------
def _import_torch(source: str):
    try:
        import torch  # noqa: PLC0415 (optional dependency, only to read the file)
    except ImportError as error:
        raise ImportError(
            f"reading a {source} checkpoint needs PyTorch (CPU is enough): "
            "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
        ) from error
    return torch


class _Stub:
    """Stands in for any class or function a checkpoint pickles besides tensors."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _stub_pickle_module():
    """A `pickle_module` for torch.load whose unpickler stubs every non-tensor global."""
    import copyreg
    import collections
    import types

    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("builtins", "object"): object,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
    }

    class StubUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            if module == "torch._utils" and name.startswith("_rebuild"):
                import torch._utils  # noqa: PLC0415

                return getattr(torch._utils, name)
            if module == "torch" and name in ("Size", "float32", "float16", "bfloat16",
                                              "float64", "int64", "int32", "uint8", "bool"):
                import torch  # noqa: PLC0415

                return getattr(torch, name)
            return type(f"Stub[{module}.{name}]", (_Stub,), {})

    module = types.ModuleType("vqjax_stub_pickle")
    module.Unpickler = StubUnpickler
    # torch's legacy (pre-zip) format reads its header with `pickle_module.load`: stubbed too.
    module.load = lambda file, **kwargs: StubUnpickler(file, **kwargs).load()
    module.__name__ = "vqjax_stub_pickle"
    return module


def load_checkpoint(path: str, source: str):
    """The unpickled torch file at `path` (tensors on the CPU)."""
    torch = _import_torch(source)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{source}: no checkpoint file at {path!r}")
    with open(path, "rb") as file:
        magic = file.read(2)
    if magic != b"PK" and magic[:1] != b"\x80":  # torch.save's zip archive, or legacy pickle
        raise CheckpointError(
            f"{source}: {path!r} is not a PyTorch checkpoint (neither a torch.save zip archive "
            f"nor a pickle; it starts with {magic!r})"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # pickled training objects besides tensors: read again with stubs below
    except Exception as error:  # not a torch file at all (zip/pickle errors of many kinds)
        raise CheckpointError(
            f"{source}: {path!r} is not a PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=_stub_pickle_module())
    except Exception as error:
        raise CheckpointError(
            f"{source}: {path!r} could not be read as a PyTorch checkpoint "
            f"({type(error).__name__}: {error})"
        ) from error


def load_state_dict(path: str, containers: Iterable[str], source: str) -> dict[str, np.ndarray]:
    """The state dict of the checkpoint at `path`: the first of `containers` (keys of the top-level
    dict, e.g. "state_dict") present, as {name: float32 numpy array}."""
    checkpoint = load_checkpoint(path, source)
    containers = tuple(containers)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{source}: {os.fspath(path)!r} holds a {type(checkpoint).__name__}, not a dict with "
            f"one of the keys {list(containers)}"
        )
    for container in containers:
        if container in checkpoint:
            state_dict = checkpoint[container]
            break
    else:
        raise CheckpointError(
            f"{source}: {os.fspath(path)!r} has none of the keys {list(containers)} (it has "
            f"{sorted(map(str, checkpoint))[:10]}); is it a {source} checkpoint?"
        )
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"{source}: checkpoint[{container!r}] is a {type(state_dict).__name__}, "
            "not a state dict"
        )
    arrays = {}
    for key, value in state_dict.items():
        if not hasattr(value, "detach"):
            raise CheckpointError(
                f"{source}: state dict entry {key!r} is a {type(value).__name__}, not a tensor"
            )
        arrays[str(key)] = value.detach().float().numpy()
    return arrays


# -- state dict -> Flax tree -------------------------------------------------------------------
def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """torch Conv2d weight [out, in, kh, kw] -> Flax Conv kernel [kh, kw, in, out]."""
    return np.transpose(weight, (2, 3, 1, 0))


def require(state_dict: Mapping[str, np.ndarray], key: str, source: str, ndim: int | None = None,
            what: str = "") -> np.ndarray:
    """state_dict[key], or a CheckpointError naming the key (and what it should be)."""
    if key not in state_dict:
        raise CheckpointError(f"{source}: missing key {key!r}{f' ({what})' if what else ''}")
    value = state_dict[key]
    if ndim is not None and value.ndim != ndim:
        raise CheckpointError(
            f"{source}: key {key!r} has shape {tuple(value.shape)}; expected a {ndim}-d tensor"
            f"{f' ({what})' if what else ''}"
        )
    return value


def fill_tree(
    abstract,
    torch_key: Callable[[tuple[str, ...]], str],
    state_dict: Mapping[str, np.ndarray],
    source: str,
    ignored: Callable[[str], bool] = lambda key: False,
):
    """The tree shaped like `abstract` (ShapeDtypeStructs) with each leaf read from `state_dict`.

    `torch_key(path)` names the torch tensor of the Flax leaf at `path` (a tuple of keys ending in
    "kernel", "bias", "scale" or a quantizer's "codebook"). Conv kernels are transposed from torch's
    layout; scales/biases/codebooks are taken as they are. Keys for which `ignored(key)` is true
    (e.g. a saved discriminator) may be left over; any other unused key is an error.
    """
    used: set[str] = set()

    def leaf(path, spec):
        names = tuple(getattr(entry, "key", str(entry)) for entry in path)
        key = torch_key(names)
        expected = tuple(spec.shape)
        if key not in state_dict:
            raise CheckpointError(
                f"{source}: missing key {key!r} (expected shape "
                f"{_torch_shape(names, expected)}, for {'/'.join(names)})"
            )
        value = state_dict[key]
        if names[-1] == "kernel" and value.ndim == 4:
            value = conv_kernel(value)
        if tuple(value.shape) != expected:
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(state_dict[key].shape)}; expected "
                f"{_torch_shape(names, expected)} (for {'/'.join(names)})"
            )
        used.add(key)
        return np.asarray(value, dtype=spec.dtype)

    tree = jax.tree_util.tree_map_with_path(leaf, abstract)
    unexpected = sorted(k for k in state_dict if k not in used and not ignored(k))
    if unexpected:
        shapes = ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in unexpected[:8])
        more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
        raise CheckpointError(
            f"{source}: unexpected keys in the state dict (not part of the inferred network): "
            f"{shapes}{more}"
        )
    return tree


def _torch_shape(names: tuple[str, ...], flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch tensor shape that corresponds to a Flax leaf's shape."""
    if names[-1] == "kernel" and len(flax_shape) == 4:
        kh, kw, cin, cout = flax_shape
        return (cout, cin, kh, kw)
    return flax_shape
