"""Config helpers the trainers need. The presets themselves live in the repository's `configs/`,
which the library never imports (vqjax installs as a wheel without it)."""

from __future__ import annotations

import ml_collections


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
