#!/usr/bin/env bash
# One GPU/TPU run of everything that matters there (under 8 minutes): tokenizer and MaskGIT train
# steps in bf16, 8-step sampling, cuDNN vs XLA attention. Writes docs/benchmarks.md's
# "accelerator" section and a log. Usage: bash bench/accelerator.sh [--dry-run] [--no-write]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
"$PY" -c "import jax; print('devices:', jax.devices())"
exec "$PY" -m bench.accelerator "$@"
