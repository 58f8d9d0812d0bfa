"""Moving arrays to the host, on one process or many: the one `to_host` of the trainers' loops,
their periodic eval and `vqjax.evaluation`."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def to_host(tree: Any) -> Any:
    """Numpy copies of the arrays of `tree` (an array or any pytree of them; numpy leaves pass
    through): each whole global array, also when it spans processes. A replicated array is read
    from this process's own copy; a sharded one is all-gathered, so every process gets every row
    and host-side statistics agree across processes."""
    return jax.tree.map(_leaf_to_host, tree)


def _leaf_to_host(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
