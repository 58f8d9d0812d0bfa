#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: the same command runs on every worker; jax.distributed.initialize()
# finds the other workers through the TPU metadata, each worker feeds its slice of every global batch.
#
#   launch/tpu_pod.sh TPU_NAME ZONE configs/vitvqgan.py:B,dataset=imagenet2012 gs://BUCKET/run [--config.x=y ...]
#
# Needs: gcloud, a TPU VM slice with this repository checked out at the same path on every worker
# (or use the `--command` below to clone it), and the dataset prepared for tfds in a bucket
# (--config.dataset.data_dir=gs://BUCKET/tensorflow_datasets). Checkpoints go to the workdir; rerun the
# same line after a preemption to resume.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,11p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=${REPO_DIR:-~/vqjax}
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  set -e
  cd $REPO_DIR
  make setup PYTHON=python3 >/dev/null
  .venv/bin/pip install -q 'jax[tpu]==$(grep '^jax==' requirements.txt | cut -d= -f3)'
  export TFDS_DATA_DIR=\${TFDS_DATA_DIR:-}
  .venv/bin/python -m launch.train --config=$CONFIG --workdir=$WORKDIR $*
"
