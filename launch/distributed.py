"""Multi-process flags shared by the launch scripts, and starting JAX's distributed runtime.

On Cloud TPU pods, Slurm and Open MPI `jax.distributed.initialize()` finds its peers itself (run the
same command on every host). Elsewhere pass `--coordinator_address=HOST:PORT --num_processes=N
--process_id=I` to each process (e.g. 2 local processes on 127.0.0.1 with CPU devices and gloo).
"""

from __future__ import annotations

import os

from absl import app, flags

_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")

CLUSTER_ENV = ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
               "JAX_COORDINATOR_ADDRESS")


def initialize_distributed() -> None:
    """Start JAX's multi-process runtime when launched as several processes."""
    import jax

    if _COORDINATOR.value or _NUM_PROCESSES.value:
        if None in (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
            raise app.UsageError("--coordinator_address, --num_processes and --process_id go "
                                 "together")
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    elif os.environ.get("SLURM_NTASKS", "1") != "1" or any(
            k in os.environ for k in CLUSTER_ENV if k != "SLURM_NTASKS"):
        jax.distributed.initialize()  # cluster auto-detection (TPU pod, Slurm, Open MPI)
