#!/usr/bin/env bash
# Multi-GPU training with torchrun:  bash tools/dist_train.sh CONFIG GPUS [train.py options]
# (each process runs tools/train.py CONFIG --launcher pytorch; add --auto-scale-lr when GPUS x batch is not 16)
# NNODES, NODE_RANK, MASTER_ADDR and PORT are read from the environment for multi-node runs (tools/torchrun.sh).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: bash tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--cfg-options ...] [--resume]" >&2; exit 2; }
CONFIG=$1 GPUS=$2
shift 2
exec bash "$(dirname "$0")/torchrun.sh" "$GPUS" "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
