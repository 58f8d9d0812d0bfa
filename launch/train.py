r"""Train a model: `python -m launch.train --config=configs/vitvqgan.py:tiny --workdir=/tmp/run`.

Rerunning the same command resumes from the newest complete checkpoint in `--workdir` (a damaged
one is moved to `<workdir>/checkpoints_aside/` with a warning); `--step=N` resumes from checkpoint
N instead. The first line on stdout says `starting from scratch`, `resumed from step N (checkpoint
PATH)`, or that the run had already finished (then it exits 0 at once, without compiling).
Any config field can be overridden: `--config.optimizer.lr=3e-4 --config.quantizer.name=fsq`.
On resume, changes to fields that change the model or the data stream are refused with the
fields named (`--accept_config_changes` continues anyway); cadences and total_steps may change.

Ctrl-C or SIGTERM: the current step finishes, a checkpoint is saved, and the run exits (Ctrl-C:
status 130, SIGTERM: 0); a second Ctrl-C during that save exits at once, leaving the earlier
checkpoints as they were. Errors in the config, the workdir or a checkpoint are printed as one
line `error: ...` (status 1).

Multi-host: on Cloud TPU pods and Slurm clusters `jax.distributed.initialize()` finds its peers
itself (run the same command on every host: see launch/tpu_pod.sh and launch/slurm.sbatch). Elsewhere
pass `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each process.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from launch.distributed import initialize_distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and images go.")
_STEP = flags.DEFINE_integer("step", None, "Resume from this checkpoint step (default: the "
                             "newest complete one); later checkpoints are moved aside.")
_ACCEPT = flags.DEFINE_bool("accept_config_changes", False, "Resume even if fields that change "
                            "the model or the data stream differ from the saved config.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every file it writes at INFO
    initialize_distributed()
    import jax

    from vqjax.data.errors import DatasetNotFoundError
    from vqjax.train import run
    from vqjax.train.checkpoint import CheckpointError
    from vqjax.train.loop import Interrupted, SaveAborted
    from vqjax.train.pinning import TokenizerPinError
    from vqjax.train.validate import ConfigError

    logging.info("process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].device_kind)
    try:
        run(_CONFIG.value, _WORKDIR.value, step=_STEP.value,
            accept_config_changes=_ACCEPT.value)
    except (ConfigError, CheckpointError, TokenizerPinError, DatasetNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except SaveAborted as error:
        print(f"aborted: {error}; the earlier checkpoints are intact", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(130)  # do not wait for the abandoned save's writer threads
    except Interrupted as error:
        print(str(error), file=sys.stderr, flush=True)
        sys.exit(130)
    except KeyboardInterrupt:
        print("interrupted before training started: nothing to save", file=sys.stderr,
              flush=True)
        sys.exit(130)
    if jax.process_index() == 0:
        from vqjax.paths import resolve
        from vqjax.train.summary import run_summary

        print(run_summary(resolve(_WORKDIR.value)), flush=True)


if __name__ == "__main__":
    app.run(main)
