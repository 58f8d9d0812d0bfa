"""Moving evaluation outputs to the host, on one process or many."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def to_host(x: Any) -> np.ndarray:
    """A numpy copy of `x`: the whole global array, also when it spans processes (all-gathered,
    so every process gets every row and host-side statistics agree across processes)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
