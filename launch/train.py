r"""Train a model: `python -m launch.train --config=configs/vitvqgan.py:tiny --workdir=/tmp/run`.

Rerunning the same command resumes from the latest complete checkpoint in `--workdir`.
Any config field can be overridden: `--config.optimizer.lr=3e-4 --config.quantizer.name=fsq`.

Multi-host: on Cloud TPU pods and Slurm clusters `jax.distributed.initialize()` finds its peers
itself (run the same command on every host: see launch/tpu_pod.sh and launch/slurm.sbatch). Elsewhere
pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each process.
"""

from __future__ import annotations

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from launch.distributed import initialize_distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and images go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
    initialize_distributed()
    import jax

    from vqjax.train import run

    logging.info("process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].device_kind)
    run(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        from vqjax.paths import resolve
        from vqjax.train.summary import run_summary

        print(run_summary(resolve(_WORKDIR.value)), flush=True)


if __name__ == "__main__":
    app.run(main)
