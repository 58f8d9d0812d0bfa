"""Device mesh ("data", "fsdp") and the shardings the trainers use.

One `jax.jit` step over this mesh gives data parallelism (batch split over both axes) and, when
`fsdp > 1`, parameters and optimizer state sharded over the "fsdp" axis. The same code runs on 1
device, 8 fake CPU devices and a multi-host pod; only the mesh shape changes.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 2D mesh over all (or the given) devices; `data=-1` takes whatever `fsdp` leaves."""
    devices = list(devices if devices is not None else jax.devices())
    count = len(devices)
    if fsdp < 1 or count % fsdp:
        raise ValueError(f"mesh.fsdp={fsdp} must divide the device count {count}")
    if data == -1:
        data = count // fsdp
    if data * fsdp != count:
        raise ValueError(
            f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} but there are {count} devices"
        )
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices)


def from_config(config) -> Mesh:
    """The mesh of `config.mesh` (over its first `num_devices` devices, or all), checked against
    the batch: config.batch_size and its micro-batches must split evenly over the devices."""
    from vqjax.train import validate

    devices = jax.devices()[:config.mesh.num_devices] if config.mesh.num_devices else None
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, devices)
    validate.check_batch_split(config, mesh.size)
    return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def path_string(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


def fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Shard the largest axis divisible by `fsdp` for arrays of at least `min_size` elements."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(
    mesh: Mesh,
    abstract_state: Any,
    rules: Sequence[tuple[str, P]] = (),
    fsdp_min_size: int = 2**18,
) -> Any:
    """NamedShardings for a state pytree: the first regex in `rules` that matches a leaf's path
    decides its PartitionSpec; otherwise large arrays are fsdp-sharded and the rest replicated."""
    fsdp = mesh.shape["fsdp"]
    compiled = [(re.compile(pattern), spec) for pattern, spec in rules]

    def leaf_sharding(path, leaf):
        name = path_string(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for pattern, spec in compiled:
            if pattern.search(name):
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, fsdp_spec(shape, fsdp, fsdp_min_size))

    return jax.tree_util.tree_map_with_path(leaf_sharding, abstract_state)


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assemble this process's slice of the global batch into global arrays on the mesh."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}
