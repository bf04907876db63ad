#!/usr/bin/env bash
# Distributed training with torchrun: GPUs (NCCL) or CPU processes (gloo).
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT environment variables.
set -euo pipefail
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" \
python -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" --master_port="$PORT" --nproc_per_node="$NPROC" \
  "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
