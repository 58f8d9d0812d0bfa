"""Config helpers the trainers need. The presets themselves live in the repository's `configs/`,
which the library never imports (vqjax installs as a wheel without it)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

import ml_collections


# "Not set" is `None` (the presets declare these fields as typed `ml_collections` placeholders);
# configs saved before that (a run's config.json) hold these values for it, which still mean
# "not set": 0 latent/embedding dims (the quantizer's), num_classes -1 (the dataset's).
LEGACY_UNSET = {"model.latent_dim": 0, "model.embedding_dim": 0, "model.num_classes": -1}


def optional_field(config, dotted: str):
    """The value of a dotted field of `config` (a ConfigDict or a dict), or None when it is not
    set: absent, None, or its LEGACY_UNSET value in a config saved by older code."""
    node = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return unset_as_none(dotted, node)


def unset_as_none(dotted: str, value):
    """`value` of the dotted field, or None when it is the field's LEGACY_UNSET value."""
    if dotted in LEGACY_UNSET and value is not None and value == LEGACY_UNSET[dotted]:
        return None
    return value


def quantizer_options(config: ml_collections.ConfigDict) -> tuple[str, dict]:
    """(name, options) for `quantizers.build` from a `quantizer_config` block."""
    name = config.name
    if name not in config:
        choices = ", ".join(sorted(k for k in config if k != "name"))
        raise ValueError(f"config.quantizer.name={name!r} has no option block "
                         f"config.quantizer.{name}; choose one of {choices}")
    options = dict(config[name].to_dict())
    if options.get("codebook_dim") == 0:  # 0 = no factorized lookup (ConfigDict fields need a type)
        options.pop("codebook_dim")
    return name, {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def load_config(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(arg)` of a config file, as `--config=PATH:ARG` loads it: for notebooks, which
    have no flags. `path` may carry the argument itself ("configs/vitvqgan.py:tiny,res=16").

    Presets import their neighbours as `configs.common`, so the folder above the file is
    importable while it loads (and only then: sys.path is restored)."""
    path = os.fspath(path)
    if arg is None and ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    file = pathlib.Path(path).expanduser().resolve()
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist")
    root = str(file.parent.parent)
    name = f"_vqjax_config_{file.parent.name}_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(root)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {file} defines no get_config(arg)")
    return module.get_config(arg) if arg is not None else module.get_config()
