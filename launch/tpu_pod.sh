#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates the slice unless it exists, installs the
# repository on every worker, then starts the main job on all workers at once (one JAX
# process per host; jax.distributed finds the others from the TPU environment).
#
# Usage (from anywhere with gcloud set up):
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR WORKDIR [main flags...]
#   launch/tpu_pod.sh scenediff us-central2-b v4-32 /mnt/shared/runs/paper \
#       --config=configs/synthetic.py:paper --config.training.batch_size=64
#
# WORKDIR must be one directory every worker sees (e.g. a Filestore or gcsfuse mount):
# orbax writes one checkpoint from all hosts. The workers need Python 3.12 (set PYTHON).
# Spot/preemptible slices: SPOT=1. A preempted run saved a checkpoint; run the script again
# and it continues from it.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n '2,16p' "$0"; exit 2; fi
NAME=$1 ZONE=$2 ACCELERATOR=$3 WORKDIR=$4
shift 4
REPO_URL=${REPO_URL:-https://github.com/scenediff-jax/scenediff_jax.git}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5-lite}  # a TPU VM software version for your chip
PYTHON=${PYTHON:-python3.12}

if ! gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR" \
    --version="$RUNTIME" ${SPOT:+--spot}
fi

on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}

on_all_workers "set -e
  [ -d scenediff_jax ] || git clone --depth=1 $REPO_URL scenediff_jax
  cd scenediff_jax && git pull --ff-only
  [ -d .venv ] || $PYTHON -m venv .venv
  .venv/bin/pip install -q -e . 'jax[tpu]'"

on_all_workers "cd scenediff_jax && .venv/bin/python -m scenediff_jax.main --workdir=$WORKDIR $*"
