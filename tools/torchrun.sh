#!/usr/bin/env bash
# torchrun for the OpenMMLab scripts:  bash tools/torchrun.sh GPUS SCRIPT [script arguments]
# (tools/dist_train.sh and tools/dist_test.sh call it.)  NNODES, NODE_RANK, MASTER_ADDR and PORT are read from the
# environment for multi-node runs; PYTHON names the interpreter (default: python).
set -euo pipefail
GPUS=$1
shift
PYTHON=${PYTHON:-python}
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
    --nproc_per_node="$GPUS" "$@"
