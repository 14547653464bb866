#!/usr/bin/env bash
# Multi-GPU evaluation with torchrun:  bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
# NNODES, NODE_RANK, MASTER_ADDR and PORT are read from the environment for multi-node runs (tools/torchrun.sh).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [--out results.pkl] [--show-dir DIR] [--cfg-options ...]" >&2; exit 2; }
CONFIG=$1 CHECKPOINT=$2 GPUS=$3
shift 3
exec bash "$(dirname "$0")/torchrun.sh" "$GPUS" "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
