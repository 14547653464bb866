#!/usr/bin/env bash
# Multi-GPU training with torchrun:  bash tools/dist_train.sh CONFIG GPUS [train.py options]
# (each process runs tools/train.py CONFIG --launcher pytorch; add --auto-scale-lr when GPUS x batch is not 16)
# NNODES, NODE_RANK, MASTER_ADDR and PORT are read from the environment for multi-node runs.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--cfg-options ...] [--resume]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "$@"
